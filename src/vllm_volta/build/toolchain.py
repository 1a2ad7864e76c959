"""Find the CUDA toolkit a SM 7.0 build uses; refuse the ones that cannot build it.

CUDA 13 dropped compute_70 (``nvcc fatal : Unsupported gpu architecture
'compute_70'``), and torch 2.7.0 is a CUDA 12 build, so only a CUDA 12.x
toolkit will do. The search order is: an explicit ``--cuda-home``, then
``CUDA_HOME`` / ``CUDA_PATH``, then the usual install locations (newest 12.x
first), then the toolkit this tool provisioned in its cache.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

from packaging.version import Version

SUPPORTED_MAJOR = 12
RECOMMENDED = "12.8"

INSTALL_HINT = (
    "Install a CUDA 12.x toolkit (12.8 recommended, e.g. /usr/local/cuda-12.8 from NVIDIA's "
    "runfile or the cuda-toolkit-12-8 package) and point CUDA_HOME (or --cuda-home) at it; "
    "with neither set and no CUDA 12 installed, the build provisions CUDA 12.4 into its cache "
    "by itself (unless --no-provision)."
)


class ToolchainError(RuntimeError):
    """No usable CUDA toolkit; the message says why and what to install."""


@dataclasses.dataclass(frozen=True)
class Toolkit:
    root: Path
    version: Version  # nvcc's release, e.g. 12.4.131
    origin: str  # how it was found: "--cuda-home", "CUDA_HOME", "search", "provisioned"

    @property
    def nvcc(self) -> Path:
        return self.root / "bin" / "nvcc"

    @property
    def cuobjdump(self) -> Path | None:
        path = self.root / "bin" / "cuobjdump"
        return path if path.exists() else None

    @property
    def short(self) -> str:
        return f"{self.version.major}.{self.version.minor}"

    def describe(self) -> str:
        return f"CUDA {self.version} at {self.root} ({self.origin})"


_RELEASE = re.compile(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)")


def nvcc_version(nvcc: Path) -> Version:
    """The toolkit version ``nvcc --version`` reports (V12.4.131 -> 12.4.131)."""
    try:
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(f"{nvcc}: cannot run `nvcc --version`: {exc}") from None
    match = _RELEASE.search(out)
    if not match:
        raise ToolchainError(f"{nvcc}: `nvcc --version` printed no release line:\n{out}")
    return Version(match.group(2))


def inspect(root: Path, origin: str) -> Toolkit:
    """The toolkit at ``root``; ToolchainError when it has no working nvcc."""
    root = Path(root)
    nvcc = root / "bin" / "nvcc"
    if not nvcc.exists():
        raise ToolchainError(f"{root} ({origin}): no bin/nvcc there, so it is not a CUDA toolkit")
    return Toolkit(root=root, version=nvcc_version(nvcc), origin=origin)


def check_usable(tk: Toolkit) -> Toolkit:
    """Refuse toolkits that cannot build SM 7.0 kernels against torch 2.7.0."""
    if tk.version.major > SUPPORTED_MAJOR:
        raise ToolchainError(
            f"{tk.describe()}: CUDA {tk.version.major} cannot target Volta. "
            f"CUDA 13 removed compute_70 (nvcc: \"Unsupported gpu architecture 'compute_70'\"), "
            f"so it cannot build the sm_70 kernels a V100 runs. {INSTALL_HINT}"
        )
    if tk.version.major < SUPPORTED_MAJOR:
        raise ToolchainError(
            f"{tk.describe()}: too old. torch 2.7.0 is a CUDA 12 build and its extensions "
            f"must be compiled with CUDA 12.x. {INSTALL_HINT}"
        )
    return tk


LOCATIONS = ("/usr/local/cuda-*", "/usr/local/cuda", "/opt/cuda")


def candidates(env: dict[str, str] | None = None,
               locations: tuple[str, ...] = LOCATIONS) -> list[tuple[Path, str]]:
    """Toolkit roots to try, in order, with how each was found.

    ``locations`` are globs; versioned folders (``cuda-12.8``) are tried newest first.
    """
    env = os.environ if env is None else env
    seen: set[Path] = set()
    out: list[tuple[Path, str]] = []

    def add(path: str | Path | None, origin: str) -> None:
        if not path:
            return
        p = Path(path)
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            out.append((p, origin))

    for var in ("CUDA_HOME", "CUDA_PATH"):
        add(env.get(var), var)
    for pattern in locations:
        for path in sorted(glob.glob(pattern), key=_dir_version, reverse=True):
            add(path, "search")
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        add(Path(nvcc).resolve().parent.parent, "PATH")
    return out


def _dir_version(path: str) -> Version:
    try:
        return Version(path.rsplit("cuda-", 1)[1])
    except Exception:
        return Version("0")


def find(cuda_home: str | Path | None = None, env: dict[str, str] | None = None,
         provisioned: Path | None = None,
         locations: tuple[str, ...] = LOCATIONS) -> tuple[Toolkit | None, list[str]]:
    """The CUDA 12 toolkit to build with, and notes on every toolkit passed over.

    An explicit ``cuda_home`` (the --cuda-home option) or ``CUDA_HOME`` is taken
    at its word: if it is not CUDA 12, ToolchainError says so rather than
    quietly using another toolkit. Toolkits found by searching are skipped
    with a note. Returns (None, notes) when no CUDA 12 toolkit exists.
    """
    env = os.environ if env is None else env
    if cuda_home:
        return check_usable(inspect(Path(cuda_home), "--cuda-home")), []
    notes: list[str] = []
    for root, origin in candidates(env, locations):
        if not (root / "bin" / "nvcc").exists():
            if origin in ("CUDA_HOME", "CUDA_PATH"):
                raise ToolchainError(f"{origin}={root}: no bin/nvcc there. Unset it or point it "
                                     f"at a CUDA 12 toolkit. {INSTALL_HINT}")
            continue
        tk = inspect(root, origin)
        try:
            return check_usable(tk), notes
        except ToolchainError as exc:
            if origin in ("CUDA_HOME", "CUDA_PATH"):
                raise
            notes.append(str(exc).split(". ")[0] + ": skipped")
    if provisioned is not None and (provisioned / "bin" / "nvcc").exists():
        return check_usable(inspect(provisioned, "provisioned")), notes
    return None, notes
