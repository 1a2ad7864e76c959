"""The dependency lock published beside a vllm wheel: exact versions and hashes.

The wheel's own metadata carries bounds (patch "requirements: bound the
dependencies that moved past vLLM 0.9.2"); the lock fixes one resolution
of them, the one the install test installs and imports, so every host gets
the same set:

    vllm-0.9.2+volta.N.lock.txt

It is a pip requirements file in ``--require-hashes`` form, written by
``uv pip compile --universal`` (one file for every supported Python and
platform marker), with the vllm wheel itself pinned to its sha256 as the
last entry. ``pip install --require-hashes -r`` it (docs/install.md); the
vllm-volta meta wheel carries the same exact versions as its requirements.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement

from vllm_volta.ship.artifacts import check_vllm_wheel, sha256_of, wheel_metadata

Progress = Callable[[str], None]
SUFFIX = ".lock.txt"
# The oldest Python the lock covers; vLLM 0.9.2 supports 3.9 to 3.12.
PYTHON_FLOOR = "3.9"


class LockError(RuntimeError):
    """The lock cannot be made or read; the message says why and what to do."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None

    def requirement(self) -> str:
        return f"{self.name}=={self.version}" + (f" ; {self.marker}" if self.marker else "")


def lock_path(wheel: Path) -> Path:
    """``dist/vllm-0.9.2+volta.N-....whl`` -> ``dist/vllm-0.9.2+volta.N.lock.txt``."""
    name, version = wheel.name.split("-")[:2]
    return wheel.with_name(f"{name}-{version}{SUFFIX}")


def runtime_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist without extras: what a plain install resolves."""
    out = []
    for line in wheel_metadata(wheel).get("requires-dist", []):
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        out.append(line)
    return out


def _uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # the `uv` package from PyPI (requirements/ship.txt)
        return find_uv_bin()
    except Exception:
        raise LockError("cannot make the lock: `uv` not found; run it from `nox -s lock`, or "
                        "`python -m pip install uv`") from None


def make_lock(wheel: Path, progress: Progress = print, *, index_url: str | None = None) -> Path:
    """Resolve the wheel's requirements now and write its lock beside it (atomically)."""
    artifact, series = check_vllm_wheel(wheel)
    out = lock_path(wheel)
    requirements = runtime_requirements(wheel)
    start = time.monotonic()
    progress(f"resolving {len(requirements)} requirements of {wheel.name} (uv, every Python >= "
             f"{PYTHON_FLOOR}, with hashes)")
    with tempfile.TemporaryDirectory(prefix=".volta-lock-", dir=wheel.parent) as tmp:
        src = Path(tmp) / "requirements.in"
        src.write_text("\n".join(requirements) + "\n")
        resolved = Path(tmp) / "lock.txt"
        cmd = [_uv(), "pip", "compile", str(src), "--universal", "--python-version", PYTHON_FLOOR,
               "--generate-hashes", "--no-header", "--no-annotate", "--quiet", "-o", str(resolved)]
        index = index_url or os.environ.get("VLLM_VOLTA_LOCK_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
        if index:
            cmd += ["--default-index", index]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise LockError(f"cannot resolve the requirements of {wheel.name}: uv said: {last}; check "
                            "the package index (PIP_INDEX_URL) and run `nox -s lock` again")
        body = resolved.read_text()
        staged = Path(tmp) / out.name
        staged.write_text(
            f"# The dependency lock of {wheel.name}: one tested resolution of its requirements.\n"
            f"# Made {time.strftime('%Y-%m-%d', time.gmtime())} by `nox -s lock` (uv pip compile --universal"
            f" --python-version {PYTHON_FLOOR} --generate-hashes).\n"
            "# Install: pip install --require-hashes -r THIS_FILE (see docs/install.md).\n"
            + body.rstrip("\n") + "\n"
            + f"vllm=={series.version} \\\n    --hash=sha256:{artifact.sha256}\n")
        os.replace(staged, out)
    progress(f"lock: {out} ({len(read_pins(out))} pins) in {time.monotonic() - start:.0f}s")
    return out


def read_pins(lock: Path) -> list[Pin]:
    """The ``name==version ; marker`` entries of a lock, hashes left out."""
    pins = []
    for line in lock.read_text().splitlines():
        line = line.strip().rstrip("\\").strip()
        if not line or line.startswith(("#", "--")):
            continue
        try:
            req = Requirement(line)
        except Exception as exc:
            reason = str(exc).splitlines()[0]
            raise LockError(f"{lock}: cannot read the line {line!r} ({reason}); make the lock again "
                            "with `nox -s lock`") from None
        (spec,) = req.specifier
        pins.append(Pin(req.name, spec.version, str(req.marker) if req.marker else None))
    return pins


def check_lock(lock: Path, wheel: Path) -> None:
    """The lock belongs to this wheel: it pins the wheel's version and sha256."""
    if not lock.exists():
        raise LockError(f"no lock beside {wheel.name} ({lock.name}): run `nox -s lock` first")
    text = lock.read_text()
    digest = sha256_of(wheel)
    if f"sha256:{digest}" not in text:
        raise LockError(f"{lock.name} was made for another build of {wheel.name} (its sha256 is not "
                        "in it): run `nox -s lock` again")
