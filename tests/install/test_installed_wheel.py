"""The wheel as a V100 host installs it: dependencies, a complete package, the imports.

What each test proves is what a fleet host would see after
``pip install --require-hashes -r vllm-0.9.2+volta.N.lock.txt`` (the lock
includes the wheel): the set it resolves, the compiled extensions loading,
and every module vLLM imports on a CUDA 7.0 host importing. The fixture is
in conftest.py; the probe that runs inside the venv is probe.py.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from vllm_volta.ship import lock as lock_mod

pytestmark = pytest.mark.install
PROBE = Path(__file__).with_name("probe.py")

# Modules of vLLM's model registry that may fail to import here, each with its
# reason: an optional third-party package the wheel does not require, or a
# step only a GPU host can take. Empty today: every registry module imports.
ALLOWED_REGISTRY_FAILURES: dict[str, str] = {}


def venv_pins(installed) -> dict[str, str]:
    proc = subprocess.run([lock_mod._uv(), "pip", "freeze", "--python", str(installed.venv_python)],
                          capture_output=True, text=True, check=True)
    pins = {}
    for line in proc.stdout.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def lock_pins_here(installed) -> dict[str, str]:
    """The lock's pins whose markers hold for this interpreter and platform."""
    env = default_environment()
    pins = {}
    for pin in lock_mod.read_pins(installed.lock):
        req = Requirement(pin.requirement())
        if req.marker is None or req.marker.evaluate(env):
            pins[canonicalize_name(pin.name)] = pin.version
    return pins


def test_compiled_extensions_load(installed):
    assert installed.probe["extensions"] == {
        "vllm._C": "ok", "vllm._moe_C": "ok", "vllm.cumem_allocator": "ok"}


def test_platform_is_cuda_70_and_triton_active(installed):
    assert "is_cuda=True" in installed.probe["platform"]
    assert "major=7, minor=0" in installed.probe["platform"]
    assert installed.probe["has_triton"] is True


def test_dependency_stack(installed):
    """torch 2.7.0 with CUDA, and a transformers that vLLM 0.9.2 can import."""
    assert installed.probe["torch"].startswith("2.7.0+cu")
    pins = venv_pins(installed)
    major, minor = (int(x) for x in pins["transformers"].split(".")[:2])
    assert (major, minor) < (4, 54), pins["transformers"]


def test_engine_and_server_import(installed):
    failures = {k: v for k, v in {**installed.probe["top_level"], **installed.probe["core"]}.items()
                if v != "ok"}
    assert not failures, json.dumps(failures, indent=2)


def test_v0_attention_backend_is_torch_sdpa(installed):
    assert installed.probe["attention_backend_v0"] == (
        "vllm.attention.backends.torch_sdpa_cuda.TorchSDPACudaBackend")


def test_lru_cache_on_resolved_cachetools(installed):
    assert installed.probe["lru_cache"] == "ok"


def test_every_registry_model_imports(installed):
    registry = installed.probe["registry"]
    assert len(registry) > 150, f"only {len(registry)} registry entries: the probe read the wrong registry"
    failed = {arch: entry["status"] for arch, entry in registry.items() if entry["status"] != "ok"}
    unexpected = {a: s for a, s in failed.items() if a not in ALLOWED_REGISTRY_FAILURES}
    stale = sorted(a for a in ALLOWED_REGISTRY_FAILURES if a not in failed)
    assert not unexpected, f"{len(unexpected)} of {len(registry)} registry models fail to import:\n" + \
        "\n".join(f"  {a}: {s}" for a, s in sorted(unexpected.items()))
    assert not stale, f"allowed failures that now import (remove them): {stale}"


def test_vllm_serve_help(installed):
    """The `vllm` console script the wheel installs, as a V100 host runs it."""
    proc = installed.run(str(PROBE), "cli", "serve", "--help", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for option in ("--tensor-parallel-size", "--dtype", "--max-model-len", "--chat-template"):
        assert option in proc.stdout, f"`vllm serve --help` does not list {option}"


def test_installed_set_is_the_lock(installed):
    """Nothing beyond the lock got in, and every pin for this Python is what is installed."""
    installed_pins = venv_pins(installed)
    want = lock_pins_here(installed)
    # uv venv --seed adds pip and setuptools of its own; they are not part of the lock.
    extra = {n: v for n, v in installed_pins.items() if n not in want and n not in ("pip", "setuptools", "wheel")}
    differ = {n: (want[n], installed_pins.get(n)) for n in want if installed_pins.get(n) != want[n]}
    assert not extra, f"installed but not in the lock: {extra}"
    assert not differ, f"lock vs installed: {differ}"


# Where a plain pip resolution may pick another version than the universal lock, and why.
PIP_MAY_DIFFER = {
    # The wheel caps setuptools below 80 on Python 3.12 only (vLLM's own line); the universal lock
    # keeps one setuptools for every Python, so it takes 79.x everywhere, while pip on 3.11 takes
    # the newest for Triton's unbounded `setuptools>=40.8.0`. vLLM imports no setuptools API.
    "setuptools": "one version across Pythons in the universal lock",
}


def test_pip_resolves_the_wheel_to_the_lock(installed):
    """A host's plain `pip install <wheel>` (no lock) picks the same versions the lock fixes."""
    report = installed.venv_python.parent.parent / "pip-report.json"
    proc = installed.run("-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                         "--report", str(report), str(installed.wheel), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    picked = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    want = lock_pins_here(installed)
    differ = {n: (want.get(n), v) for n, v in picked.items()
              if want.get(n) != v and n not in PIP_MAY_DIFFER}
    assert not differ, f"pip's resolution differs from the lock (lock, pip): {differ}"


def test_lock_pins_this_wheel(installed):
    lock_mod.check_lock(installed.lock, installed.wheel)


# Python files the build writes itself: setup.py's version, the series' provenance.
BUILD_WRITTEN = {"vllm/_version.py", "vllm/_volta_provenance.py"}


def test_wheel_python_files_are_the_full_series(installed, vllm_full_tree):
    """The install test's wheel carries the same vllm/*.py as the full series (the source route's input)."""
    with zipfile.ZipFile(installed.wheel) as zf:
        in_wheel = {n: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist()
                    if n.startswith("vllm/") and n.endswith(".py") and n not in BUILD_WRITTEN}
    in_tree = {str(p.relative_to(vllm_full_tree)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (vllm_full_tree / "vllm").rglob("*.py")
               if str(p.relative_to(vllm_full_tree)) not in BUILD_WRITTEN and "__pycache__" not in p.parts}
    missing = sorted(set(in_tree) - set(in_wheel))
    extra = sorted(set(in_wheel) - set(in_tree))
    changed = sorted(n for n in set(in_tree) & set(in_wheel) if in_tree[n] != in_wheel[n])
    assert not (missing or extra or changed), f"missing {missing[:10]}, extra {extra[:10]}, changed {changed[:10]}"


@pytest.fixture(scope="session")
def vllm_full_tree(installed, tmp_path_factory):
    """The full series' tree (branch volta's tip), exported like the recommended one."""
    import pygit2

    from .conftest import ROOT, export_tree
    repo = pygit2.Repository(str(ROOT / "upstream"))
    tip = repo.lookup_branch("volta").peel(pygit2.Commit)
    return export_tree(tip, tmp_path_factory.mktemp("full-tree"))
