"""Publish to a real private index and install ``vllm-volta`` from it.

Two pypiserver instances run on 127.0.0.1 (random free ports, stopped at the
end): PRIVATE (uploads need a password, as a real index would) and PUBLIC, a
stand-in for PyPI serving a plain ``vllm`` 0.9.2 and a higher 0.10.0 plus the
one dependency of the wheel under test. The publish goes through the CLI
(``python -m vllm_volta ship publish``, twine underneath); installs use pip
and uv, each in a fresh virtual environment, with the commands of
docs/install.md.

The vllm wheel under test, clearly labelled in the test output:
1. VLLM_VOLTA_TEST_WHEEL_DIR=<folder>: the wheel(s) there (with .sha256);
2. otherwise, where the patched tree exists (VLLM_VOLTA_TREE, default
   upstream/) and the build CLI is present: ``python -m vllm_volta build wheel
   --route empty`` builds it (VLLM_TARGET_DEVICE=empty: no CUDA kernels,
   version 0.9.2+volta.N.empty);
3. otherwise (or VLLM_VOLTA_TEST_WHEEL_DIR=fixture): a FIXTURE wheel of the
   same name and version shape, "FIXTURE" in its summary.
The publish and install code path is the one the CUDA wheel takes. A real
empty-route wheel requires vLLM's ~50 Python dependencies: uv drops them with
an override (so uv still resolves vllm-volta -> vllm); pip cannot, so it
installs with --no-deps and the pin is checked afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("pypiserver", reason="pypiserver not installed (requirements/ship.txt)")
pytest.importorskip("passlib", reason="passlib not installed (requirements/ship.txt: pypiserver[passlib])")
pytest.importorskip("twine", reason="twine not installed (requirements/ship.txt)")

from vllm_volta.ship.artifacts import find_vllm_wheels, wheel_metadata  # noqa: E402
from vllm_volta.ship.cli import main as ship  # noqa: E402
from vllm_volta.ship.meta import meta_version_for  # noqa: E402
from vllm_volta.ship.wheelwrite import write_wheel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
USER, PASSWORD = "ci-publisher", "not-a-real-token"
DEP = "volta-fixture-dep"


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        pytest.skip("uv not installed (requirements/ship.txt)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Index:
    """One pypiserver on loopback, started and stopped by the test session."""

    def __init__(self, root: Path, *, password_file: Path | None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.simple = self.url + "simple/"
        auth = ["-P", str(password_file), "-a", "update"] if password_file else ["-P", ".", "-a", "."]
        self.log = (root.parent / f"{root.name}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(self.port),
             "--disable-fallback", *auth, str(root)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "health", timeout=2):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pypiserver did not start; see {self.log.name}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()

    def files(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())


def _fixture_vllm(dist: Path, version: str = "0.9.2+volta.1.empty") -> Path:
    lines = ["Metadata-Version: 2.1", "Name: vllm", f"Version: {version}",
             "Summary: FIXTURE: not vLLM; stands in for an empty-route build in the index tests",
             "Requires-Python: >=3.9", f"Requires-Dist: {DEP}>=1.0"]
    provenance = {"fixture": True, "series_version": 1, "base": "vllm 0.9.2 sdist",
                  "route": "empty (fixture)"}
    return write_wheel(dist, "vllm", version, metadata="\n".join(lines) + "\n\n",
                       files={"vllm/__init__.py": f"__version__ = {version!r}\n".encode()},
                       dist_info_files={"volta_provenance.json": json.dumps(provenance).encode()})


def _public_standins(root: Path) -> None:
    for version in ("0.9.2", "0.10.0"):
        write_wheel(root, "vllm", version, sidecar=False,
                    metadata=f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                             f"Summary: stand-in for PyPI's vllm {version}\n\n",
                    files={"vllm/__init__.py": f"__version__ = {version!r}\n".encode()})
    # someone claims the meta name on the public index: pin it, or let the private index rank first
    write_wheel(root, "vllm-volta", "99.0", sidecar=False,
                metadata="Metadata-Version: 2.1\nName: vllm-volta\nVersion: 99.0\nSummary: squatter\n\n")
    write_wheel(root, DEP, "1.0", sidecar=False,
                metadata=f"Metadata-Version: 2.1\nName: {DEP}\nVersion: 1.0\nSummary: dependency stand-in\n\n",
                files={"volta_fixture_dep/__init__.py": b""})


def _tree() -> Path | None:
    tree = Path(os.environ.get("VLLM_VOLTA_TREE", ROOT / "upstream"))
    tree = tree if tree.is_absolute() else ROOT / tree
    return tree if (tree / "setup.py").is_file() and (tree / "vllm").is_dir() else None


def _vllm_under_test(dist: Path) -> str:
    """Put the vllm wheel to publish into ``dist``; say which kind it is."""
    wheel_dir = os.environ.get("VLLM_VOLTA_TEST_WHEEL_DIR", "")
    if wheel_dir and wheel_dir != "fixture":
        for wheel in Path(wheel_dir).glob("vllm-*.whl"):
            shutil.copy2(wheel, dist)
            shutil.copy2(wheel.with_name(wheel.name + ".sha256"), dist)
        return f"empty-route wheel from {wheel_dir}"
    tree = _tree()
    if wheel_dir != "fixture" and tree and importlib.util.find_spec("vllm_volta.build.cli"):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "vllm_volta", "build", "wheel", "--route", "empty",
                               "--tree", str(tree), "--out", str(dist)],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"empty-route build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return f"empty-route wheel of {tree}, built in {time.monotonic() - started:.0f} s"
    _fixture_vllm(dist)
    return "FIXTURE wheel (no patched tree or no build CLI here)"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("index")
    dist = base / "dist"
    dist.mkdir()
    source = _vllm_under_test(dist)
    from passlib.apache import HtpasswdFile

    htpasswd = HtpasswdFile(str(base / "htpasswd"), new=True)
    htpasswd.set_password(USER, PASSWORD)
    htpasswd.save()
    _public_standins(base / "public")
    private = Index(base / "private", password_file=base / "htpasswd")
    public = Index(base / "public", password_file=None)
    wheels, series = find_vllm_wheels(dist)
    requires = wheel_metadata(wheels[0].path).get("requires-dist", [])
    info = {"dist": dist, "base": base, "series": series, "source": source,
            "private": private, "public": public, "vllm_requires": requires}
    yield info
    private.stop()
    public.stop()


@pytest.fixture
def publisher_env(world, monkeypatch):
    monkeypatch.setenv("VLLM_VOLTA_INDEX_URL", world["private"].url)
    monkeypatch.setenv("VLLM_VOLTA_INDEX_USER", USER)
    monkeypatch.setenv("VLLM_VOLTA_INDEX_TOKEN", PASSWORD)
    monkeypatch.delenv("VLLM_VOLTA_INDEX_SIMPLE_URL", raising=False)


def _clean_env(base: Path) -> dict[str, str]:
    """No pip/uv configuration from this machine: only the indexes named on the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               UV_NO_CONFIG="1", UV_CACHE_DIR=str(base / "uv-cache"), UV_PYTHON_DOWNLOADS="never",
               XDG_CONFIG_HOME=str(base / "xdg"))
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    return done


_INSPECT = """
import json, sys
from importlib import metadata
sys.path.insert(0, {src!r})
from vllm_volta.ship.provenance import read_installed_provenance

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

provenance, path = read_installed_provenance("vllm")
print(json.dumps({{
    "vllm": version("vllm"), "vllm-volta": version("vllm-volta"),
    "requires": metadata.requires("vllm-volta") if version("vllm-volta") else None,
    "provenance": provenance, "provenance_path": path,
}}))
"""


def _installed(python: Path, env: dict[str, str]) -> dict:
    done = _run([str(python), "-c", _INSPECT.format(src=str(SRC))], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _drop_vllm_deps(world) -> list[str]:
    """Names of the real vllm wheel's dependencies (none for the fixture, which needs DEP)."""
    from packaging.requirements import Requirement

    names = [Requirement(r).name for r in world["vllm_requires"]]
    return [n for n in names if n != DEP]


def test_publish_to_private_index(world, publisher_env, capsys):
    assert ship(["publish", "--dist", str(world["dist"]), "--allow-empty-build", "--allow-dev-build"]) == 0
    out = capsys.readouterr().out
    files = world["private"].files()
    version = world["series"].version
    assert f"vllm_volta-{meta_version_for(world['series'])}-py3-none-any.whl" in files
    assert any(f.startswith(f"vllm-{version}-") for f in files)
    assert "published 2 files" in out
    # the index serves the hash recorded in each sidecar
    page = urllib.request.urlopen(world["private"].simple + "vllm/").read().decode()
    sidecar = next(world["dist"].glob("vllm-*.whl.sha256")).read_text().split()[0]
    assert f"#sha256={sidecar}" in page


def test_republish_of_the_same_files_is_done_and_uploads_nothing(world, publisher_env, capsys):
    before = world["private"].files()
    assert ship(["publish", "--dist", str(world["dist"]), "--allow-empty-build", "--allow-dev-build"]) == 0
    out = capsys.readouterr().out
    assert "already on the index, identical" in out and "uploading" not in out
    assert world["private"].files() == before


def test_dry_run_reports_identical_files_as_done(world, publisher_env, capsys):
    assert ship(["publish", "--dist", str(world["dist"]), "--allow-empty-build", "--allow-dev-build", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "identical (done)" in out


def test_upload_needs_the_token(world, publisher_env, monkeypatch, capsys, tmp_path):
    """A wrong token is refused by the index itself (HTTP 401/403) with a clear message."""
    monkeypatch.setenv("VLLM_VOLTA_INDEX_TOKEN", "wrong")
    _fixture_vllm(tmp_path, "0.9.2+volta.99.empty")  # a new version: the existence check passes
    assert ship(["publish", "--dist", str(tmp_path), "--allow-empty-build", "--allow-dev-build"]) == 1
    assert "HTTP 40" in capsys.readouterr().out
    assert not any("volta.99" in f for f in world["private"].files())


def _pip_venv(world, name: str) -> tuple[Path, dict[str, str]]:
    env = _clean_env(world["base"])
    venv = world["base"] / name
    done = _run([sys.executable, "-m", "venv", str(venv)], env)
    assert done.returncode == 0, done.stderr
    return venv / "bin" / "python", env


def _pip_install(python: Path, env, world, *requirements: str) -> subprocess.CompletedProcess:
    argv = [str(python), "-m", "pip", "install", "--no-cache-dir",
            "--index-url", world["private"].simple, "--extra-index-url", world["public"].simple]
    if _drop_vllm_deps(world):
        # A real empty-route wheel: pip cannot leave out vllm's ~50 dependencies, so it
        # installs without them and vllm is named; the pin is checked after the install
        # (the test reads vllm-volta's Requires-Dist), the resolution itself is shown by
        # the fixture wheel and by the uv tests, which drop the dependencies by override.
        return _run(argv + ["--no-deps", *requirements, f"vllm=={world['series'].version}"], env)
    return _run(argv + list(requirements), env)


def test_pip_installs_the_volta_build_despite_public_vllm(world):
    """docs/install.md, pip: --index-url PRIVATE --extra-index-url PyPI, vllm-volta pinned."""
    python, env = _pip_venv(world, "venv-pip")
    meta_version = str(meta_version_for(world["series"]))
    done = _pip_install(python, env, world, f"vllm-volta=={meta_version}")
    assert done.returncode == 0, done.stdout + done.stderr
    installed = _installed(python, env)
    assert installed["vllm"] == str(world["series"].version)
    assert installed["vllm-volta"] == meta_version
    assert installed["requires"] == [f"vllm=={world['series'].version}"]
    assert installed["provenance"] and installed["provenance_path"].endswith(".json")
    print(f"[{world['source']}] pip installed vllm-volta {meta_version} -> vllm {installed['vllm']}; "
          f"provenance {installed['provenance']}")


def test_pip_unpinned_vllm_is_outranked_by_public(world):
    """The danger the meta package avoids: `pip install vllm` takes the highest version anywhere."""
    python, env = _pip_venv(world, "venv-pip-naive")
    done = _run([str(python), "-m", "pip", "install", "--no-cache-dir", "--index-url", world["private"].simple,
                 "--extra-index-url", world["public"].simple, "vllm"], env)
    assert done.returncode == 0, done.stderr
    assert _installed(python, env)["vllm"] == "0.10.0"


def test_pip_unpinned_meta_name_can_be_squatted(world):
    """Why docs/install.md pins vllm-volta==0.9.2.N for pip: an unpinned name takes the highest version."""
    python, env = _pip_venv(world, "venv-pip-squat")
    done = _run([str(python), "-m", "pip", "install", "--no-cache-dir", "--index-url", world["private"].simple,
                 "--extra-index-url", world["public"].simple, "vllm-volta"], env)
    assert done.returncode == 0, done.stderr
    assert _installed(python, env)["vllm-volta"] == "99.0"


def _uv_venv(world, name: str) -> tuple[Path, dict[str, str]]:
    env = _clean_env(world["base"])
    venv = world["base"] / name
    done = _run([_uv(), "venv", "--python", sys.executable, str(venv)], env)
    assert done.returncode == 0, done.stderr
    return venv / "bin" / "python", env


def _uv_overrides(world) -> list[str]:
    drop = _drop_vllm_deps(world)
    if not drop:
        return []
    path = world["base"] / "drop-vllm-deps.txt"
    path.write_text("".join(f"{name} ; python_version < '0'\n" for name in drop))
    return ["--override", str(path)]


@pytest.mark.parametrize("requirement", ["vllm-volta", "vllm"])
def test_uv_index_priority_resolves_volta(world, requirement):
    """docs/install.md, uv: --index PRIVATE (first) over the default index; even bare `vllm` is safe."""
    python, env = _uv_venv(world, f"venv-uv-{requirement}")
    done = _run([_uv(), "pip", "install", "--python", str(python), "--index", world["private"].simple,
                 "--default-index", world["public"].simple, *_uv_overrides(world), requirement], env)
    assert done.returncode == 0, done.stderr
    installed = _installed(python, env)
    assert installed["vllm"] == str(world["series"].version)
    assert installed["provenance"]


def test_uv_extra_index_url_for_pypi_does_not_resolve(world):
    """uv ranks --extra-index-url above --index-url: PyPI then answers for vllm, and the pin fails."""
    python, env = _uv_venv(world, "venv-uv-wrong-order")
    done = _run([_uv(), "pip", "install", "--python", str(python), "--index-url", world["private"].simple,
                 "--extra-index-url", world["public"].simple, *_uv_overrides(world),
                 f"vllm-volta=={meta_version_for(world['series'])}"], env)
    assert done.returncode != 0
    assert "unsatisfiable" in done.stderr


@pytest.mark.parametrize("mode", ["priority", "explicit"])
def test_uv_project(world, mode):
    """docs/install.md, uv project: the private index listed first, PyPI as the default.

    ``[tool.uv.sources]`` would not do for vllm: sources apply to direct
    dependencies only, and vllm is a dependency of vllm-volta. With uv's
    first-index strategy, every package the private index holds comes from it.
    ``explicit``: the index serves only what [tool.uv.sources] names, so vllm
    is listed as a direct dependency too, pinned to the same build.
    """
    project = world["base"] / f"serving-host-{mode}"
    project.mkdir()
    meta_version = str(meta_version_for(world["series"]))
    drop = _drop_vllm_deps(world)
    overrides = "".join(f'    "{n} ; python_version < \'0\'",\n' for n in drop)
    dependencies = [f"vllm-volta=={meta_version}"]
    explicit = sources = ""
    if mode == "explicit":
        dependencies.append(f"vllm=={world['series'].version}")
        explicit = "explicit = true\n"
        sources = '[tool.uv.sources]\nvllm-volta = { index = "volta" }\nvllm = { index = "volta" }\n\n'
    dependencies = json.dumps(dependencies)
    (project / "pyproject.toml").write_text(f"""\
[project]
name = "serving-host"
version = "0"
requires-python = ">=3.9"
dependencies = {dependencies}

[[tool.uv.index]]
name = "volta"
url = "{world['private'].simple}"
{explicit}
[[tool.uv.index]]
name = "pypi-stand-in"
url = "{world['public'].simple}"
default = true

{sources}[tool.uv]
package = false
override-dependencies = [
{overrides}]
""")
    env = _clean_env(world["base"])
    env.pop("UV_NO_CONFIG")  # the project's own [tool.uv] must be read
    done = _run([_uv(), "sync", "--python", sys.executable], env, cwd=project)
    assert done.returncode == 0, done.stderr
    installed = _installed(project / ".venv" / "bin" / "python", env)
    assert installed["vllm"] == str(world["series"].version)
    lock = (project / "uv.lock").read_text()
    assert f'version = "{world["series"].version}"' in lock and world["private"].simple in lock
