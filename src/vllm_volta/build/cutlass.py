"""CUTLASS headers as a local CMake source, so vLLM's CMake fetches nothing.

vLLM 0.9.2 pins CUTLASS v4.0.0 and fetches it from GitHub unless
``VLLM_CUTLASS_SRC_DIR`` names a local source. PyPI's ``nvidia-cutlass``
wheel carries CUTLASS's headers (``cutlass_library/source/include`` and
``tools/util/include``); v4.0.0 itself is not on PyPI, the nearest release
there is 4.2.0.0, which compiles every vLLM file a SM 7.0 build needs. A
small wrapper CMakeLists.txt sets the variables vLLM reads
(``CUTLASS_INCLUDE_DIR``, ``CUTLASS_TOOLS_UTIL_INCLUDE_DIR``, ``CUTLASS_DIR``).
A user with a real v4.0.0 checkout passes it with --cutlass-dir instead.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

Progress = Callable[[str], None]

PACKAGE = "nvidia-cutlass"
VERSION = "4.2.0.0"
# The wheel as PyPI served it when this was written; a different file is refused.
SHA256 = "f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6"

WRAPPER = """\
# Written by vllm-volta: CUTLASS {version} headers from PyPI's {package} wheel,
# as the header-only CUTLASS that vLLM's CMakeLists.txt expects.
cmake_minimum_required(VERSION 3.19)
project(CUTLASS VERSION {cmake_version} LANGUAGES CXX)
set(CUTLASS_DIR "${{CMAKE_CURRENT_SOURCE_DIR}}" CACHE PATH "CUTLASS source" FORCE)
set(CUTLASS_INCLUDE_DIR "${{CMAKE_CURRENT_SOURCE_DIR}}/include" CACHE PATH "CUTLASS headers" FORCE)
set(CUTLASS_TOOLS_UTIL_INCLUDE_DIR "${{CMAKE_CURRENT_SOURCE_DIR}}/tools/util/include"
    CACHE INTERNAL "CUTLASS tools/util headers")
add_library(CUTLASS INTERFACE)
add_library(nvidia::cutlass::cutlass ALIAS CUTLASS)
target_include_directories(CUTLASS INTERFACE ${{CUTLASS_INCLUDE_DIR}})
"""


class CutlassError(RuntimeError):
    pass


def source_dir(cache: Path) -> Path:
    return cache / "cutlass" / VERSION / "source"


def prepare(cache: Path, progress: Progress = print) -> tuple[Path, dict]:
    """The CUTLASS source folder for VLLM_CUTLASS_SRC_DIR, and what it is."""
    src = source_dir(cache)
    wheels = cache / "cutlass" / VERSION / "wheel"
    wheel = next(iter(sorted(wheels.glob("nvidia_cutlass-*.whl"))), None) if wheels.exists() else None
    if wheel is None:
        wheels.mkdir(parents=True, exist_ok=True)
        progress(f"pip download {PACKAGE}=={VERSION} (CUTLASS headers)")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             "--disable-pip-version-check", "-d", str(wheels), f"{PACKAGE}=={VERSION}"],
            capture_output=True, text=True)
        wheel = next(iter(sorted(wheels.glob("nvidia_cutlass-*.whl"))), None)
        if proc.returncode != 0 or wheel is None:
            raise CutlassError(f"pip download {PACKAGE}=={VERSION} failed:\n{proc.stderr[-2000:]}")
    digest = _sha256(wheel)
    if digest != SHA256:
        raise CutlassError(f"{wheel}: sha256 {digest}, expected {SHA256}; delete it to fetch again")
    info = {"source": f"PyPI {PACKAGE}=={VERSION}", "wheel": wheel.name,
            "sha256": digest, "vllm_pin": "v4.0.0"}
    if not (src / "CMakeLists.txt").exists():
        tmp = src.with_name("source.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        prefix = "cutlass_library/source/"
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith(prefix + "include/") or member.startswith(prefix + "tools/util/include/"):
                    target = tmp / member[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
        if not (tmp / "include" / "cutlass" / "cutlass.h").exists():
            raise CutlassError(f"{wheel.name} has no cutlass_library/source/include/cutlass/cutlass.h")
        (tmp / "CMakeLists.txt").write_text(WRAPPER.format(
            version=VERSION, package=PACKAGE, cmake_version=".".join(VERSION.split(".")[:3])))
        if src.exists():
            shutil.rmtree(src)
        tmp.rename(src)
    return src, info


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
