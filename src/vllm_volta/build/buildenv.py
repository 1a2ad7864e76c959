"""The virtual environment vLLM's setup.py runs in.

The kernel routes install the tree's own ``requirements/build.txt`` (torch
2.7.0, cmake, ninja, setuptools<80, setuptools-scm, ...), so the extensions
are compiled against the torch the wheel will require. The environment lives
in the cache, keyed by the requirement text and Python version, and is made
once. The empty route needs no torch: it gets the same file without torch,
cmake and ninja, and a stand-in ``torch`` module (setup.py imports torch at
the top even when it builds no extension). The upstream-kernels route uses
the same light environment with a stand-in that reports torch 2.7.0's CUDA
12.6: setup.py then takes the CUDA requirements (requirements/cuda.txt)
while compiling nothing, and no 3.5 GB torch install is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

Progress = Callable[[str], None]

# vLLM 0.9.2 supports Python 3.9 to 3.12 (pyproject.toml requires-python).
SUPPORTED_PYTHONS = ("3.12", "3.11", "3.10", "3.9")
NOT_FOR_EMPTY = ("torch", "cmake", "ninja")

TORCH_STANDIN = '''\
"""Stand-in torch for vllm-volta's empty and upstream-kernels routes: vLLM's
setup.py imports torch at the top and reads torch.version.cuda, but these
routes compile nothing."""
__version__ = "{version}+standin"


class version:
    cuda = {cuda!r}
    hip = None
'''
# torch 2.7.0's PyPI build is the CUDA 12.6 one.
TORCH_CUDA = {"empty": None, "cuda": "12.6"}
CPP_EXTENSION_STANDIN = "CUDA_HOME = None\nROCM_HOME = None\n"


class BuildEnvError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class BuildEnv:
    root: Path
    requirements: tuple[str, ...]
    standin_torch: Path | None = None  # a folder to put first on PYTHONPATH (light envs)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def versions(self) -> dict[str, str]:
        """Installed versions of the packages the provenance names."""
        code = ("import importlib.metadata as m, json\n"
                "out = {}\n"
                "for n in ('torch', 'triton', 'setuptools', 'setuptools-scm', 'cmake', 'ninja'):\n"
                "    try: out[n] = m.version(n)\n"
                "    except m.PackageNotFoundError: pass\n"
                "print(json.dumps(out))")
        out = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)


def read_requirements(tree: Path, *, for_empty: bool) -> tuple[str, ...]:
    path = tree / "requirements" / "build.txt"
    if not path.exists():
        raise BuildEnvError(f"{path}: missing; is {tree} a vLLM source tree?")
    reqs = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = line.replace(" ", "").split("=")[0].split("<")[0].split(">")[0].split("[")[0].lower()
        if for_empty and name in NOT_FOR_EMPTY:
            continue
        reqs.append(line)
    return tuple(reqs)


def find_python(python: str | None = None) -> str:
    """A Python vLLM 0.9.2 supports: the given one, this one, or python3.1x on PATH."""
    if python:
        return python
    if f"{sys.version_info.major}.{sys.version_info.minor}" in SUPPORTED_PYTHONS:
        return sys.executable
    for version in SUPPORTED_PYTHONS:
        found = shutil.which(f"python{version}")
        if found:
            return found
    raise BuildEnvError(
        f"vLLM 0.9.2 builds with Python {', '.join(reversed(SUPPORTED_PYTHONS))}; this is "
        f"{sys.version.split()[0]} and none of python3.9..3.12 is on PATH. Pass --python.")


def ensure(cache: Path, tree: Path, *, for_empty: bool = False, python: str | None = None,
           progress: Progress = print, standin_cuda: str | None = None) -> BuildEnv:
    """The build environment; ``for_empty`` gives the light one (no torch), whose
    stand-in torch reports ``standin_cuda`` as its CUDA version."""
    reqs = read_requirements(tree, for_empty=for_empty)
    interpreter = find_python(python)
    pyver = subprocess.run([interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256(("\n".join(reqs) + "\n" + pyver).encode()).hexdigest()[:12]
    kind = "light" if for_empty else "kernels"
    root = cache / "envs" / f"build-{kind}-py{pyver}-{key}"
    stamp = root / ".volta-complete"
    standin = _standin(cache, standin_cuda) if for_empty else None
    env = BuildEnv(root=root, requirements=reqs, standin_torch=standin)
    if stamp.exists():
        return env
    if root.exists():
        shutil.rmtree(root)
    start = time.monotonic()
    progress(f"creating the build environment {root} (Python {pyver}): {', '.join(reqs)}")
    _run([interpreter, "-m", "venv", str(root)], "python -m venv")
    _run([str(env.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *reqs],
         f"pip install {' '.join(reqs)}")
    stamp.write_text(json.dumps({"requirements": reqs, "python": pyver}) + "\n")
    progress(f"build environment ready in {time.monotonic() - start:.0f}s")
    return env


def _standin(cache: Path, cuda: str | None) -> Path:
    root = cache / "envs" / f"torch-standin-{'cuda' + cuda if cuda else 'nocuda'}"
    pkg = root / "torch"
    (pkg / "utils").mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(TORCH_STANDIN.format(version="2.7.0", cuda=cuda))
    (pkg / "utils" / "__init__.py").write_text("")
    (pkg / "utils" / "cpp_extension.py").write_text(CPP_EXTENSION_STANDIN)
    return root


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BuildEnvError(f"{what} failed (exit {proc.returncode}):\n{tail}")
