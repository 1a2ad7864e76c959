"""The built wheel, installed with its dependencies the way a V100 host installs it.

One session fixture does what a fleet operator does, step by step:

1. take the series' recommended tier from branch ``volta`` of upstream/ (the
   full series only adds a CMake fix, so its Python files are the same; a
   test checks that) and build it by the upstream-kernels route: the real
   compiled extensions, from PyPI's sha256-verified vllm 0.9.2 wheel;
2. write the wheel's dependency lock (``nox -s lock`` does the same);
3. make a fresh venv and install the lock with hashes, the wheel included;
   torch 2.7.0 and its CUDA libraries come from the package index (about
   7 GB on a cold cache, kept in uv's cache);
4. fetch the CUDA driver stub, so that ``vllm._C`` loads with no GPU;
5. run ``probe.py`` in that venv: vLLM as a CUDA 7.0 host imports it.

Everything downloaded stays in caches (uv's, and ~/.cache/vllm-volta/);
the build and the venv go under pytest's temporary folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

from vllm_volta.build import provision, routes  # noqa: E402
from vllm_volta.series import model as series_model  # noqa: E402
from vllm_volta.series import upstream as series_upstream  # noqa: E402
from vllm_volta.ship import lock as lock_mod  # noqa: E402


def say(message: str) -> None:
    """Progress for the long steps, shown with -s and in CI logs."""
    print(f"[install] {message}", file=sys.stderr, flush=True)


@dataclass
class Installed:
    tree: Path
    wheel: Path
    lock: Path
    venv_python: Path
    stub: Path
    probe: dict

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VLLM_TARGET_DEVICE")}
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.stub), os.environ.get("LD_LIBRARY_PATH", "")) if p)
        return env

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv_python), *args], capture_output=True, text=True,
                              env=self.env(), cwd=str(self.venv_python.parents[2]), timeout=timeout)


def uv() -> str:
    return lock_mod._uv()


def recommended_commit(root: Path) -> pygit2.Commit:
    """The commit of branch volta that ends the recommended tier (the tiers below it peeled off)."""
    series = series_model.Series.load(root)
    repo = pygit2.Repository(str(root / series_upstream.UPSTREAM_DIR))
    branch = repo.lookup_branch("volta")
    if branch is None:
        pytest.fail("upstream/ has no branch volta: run `nox -s apply` first")
    commit = branch.peel(pygit2.Commit)
    above = [e for e in series.entries if e.tier not in ("critical", "recommended")]
    for entry in reversed(above):
        subject = series.read(entry).subject
        if commit.message.partition("\n")[0].strip() != subject:
            pytest.fail(f"branch volta does not end with the series ({entry.name} expected at "
                        f"{commit.short_id}): run `nox -s apply` first")
        commit = commit.parents[0]
    last = series.upto("recommended")[-1]
    if commit.message.partition("\n")[0].strip() != series.read(last).subject:
        pytest.fail(f"branch volta lacks {last.name}: run `nox -s apply` first")
    return commit


def export_tree(commit: pygit2.Commit, dest: Path) -> Path:
    """Write the commit's files into dest (no checkout, so upstream/'s index is not touched)."""
    repo_objects = commit.tree

    def walk(tree: pygit2.Tree, at: Path) -> None:
        at.mkdir(parents=True, exist_ok=True)
        for entry in tree:
            path = at / entry.name
            if entry.type_str == "tree":
                walk(entry, path)
            elif entry.filemode == pygit2.GIT_FILEMODE_LINK:
                path.symlink_to(entry.data.decode())
            else:
                path.write_bytes(entry.data)
                if entry.filemode == pygit2.GIT_FILEMODE_BLOB_EXECUTABLE:
                    path.chmod(0o755)

    walk(repo_objects, dest)
    return dest


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    start = time.monotonic()

    commit = recommended_commit(ROOT)
    tree = export_tree(commit, base / "tree")
    say(f"tree: series up to the recommended tier ({commit.short_id}) exported to {tree}")

    result = routes.build(routes.Request(root=ROOT, tree=tree, out=base / "dist", route="upstream-kernels"),
                          progress=say)
    wheel = result.wheel
    say(f"wheel: {wheel.name} ({time.monotonic() - start:.0f}s so far)")

    lock = lock_mod.make_lock(wheel, progress=say)

    venv = base / "venv"
    subprocess.run([uv(), "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    say("installing the lock with hashes into a fresh venv (torch 2.7.0 and its CUDA libraries: "
        "about 7 GB on a cold cache)")
    t = time.monotonic()
    proc = subprocess.run([uv(), "pip", "install", "--python", str(python), "--require-hashes",
                           "-r", str(lock), "--find-links", str(wheel.parent)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"installing {lock.name} failed: {proc.stderr.strip()[-2000:]}")
    say(f"installed in {time.monotonic() - t:.0f}s")

    stub = provision.driver_stub(routes.cache_root(), progress=say)
    inst = Installed(tree=tree, wheel=wheel, lock=lock, venv_python=python, stub=stub, probe={})
    out = base / "probe.json"
    say("probing: the engine, the server and every model of the registry, as a CUDA 7.0 host")
    proc = inst.run(str(HERE / "probe.py"), str(out))
    if not out.exists():
        pytest.fail(f"the probe wrote nothing (exit {proc.returncode}): {proc.stderr[-2000:]}")
    inst.probe = json.loads(out.read_text())
    if "probe_crashed" in inst.probe:
        pytest.fail(f"the probe crashed: {inst.probe['probe_crashed'][-2000:]}")
    record = os.environ.get("VLLM_VOLTA_INSTALL_RECORD")
    if record:
        shutil.copyfile(out, record)
    say(f"ready in {time.monotonic() - start:.0f}s")
    return inst
