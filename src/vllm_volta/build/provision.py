"""Provision a CUDA 12.4 toolkit into the cache, without a system install.

No CUDA 12 compiler is on PyPI (the nvidia-cuda-nvcc-cu12 wheels hold ptxas
and libnvvm only: no cicc, cudafe++, fatbinary or nvlink). Debian trixie
ships NVIDIA's CUDA 12.4.1 as ``nvidia-cuda-toolkit`` (non-free). This module
fetches those .debs with a private apt configuration (its own sources.list,
state and cache under the cache folder; the system's apt is not touched),
unpacks them with ``dpkg -x``, adds CUB/Thrust/libcu++ from PyPI's
``nvidia-cuda-cccl-cu12==12.4.127.post1`` (Debian packages CCCL separately,
and plain 12.4.127 lacks ``cuda/__cccl_config``), and lays out a toolkit
folder of symlinks with the usual shape (bin/, nvvm/, include/, lib64/) and
an ``nvcc.profile`` of its own. A last step compiles a kernel for sm_70 and
checks the cubin, so a half-made toolkit is never used.

Needs ``apt-get`` and ``dpkg-deb`` (any Debian or Ubuntu host) and the Debian
archive keyring; pip for the CCCL wheel.
"""

from __future__ import annotations

import concurrent.futures
import getpass
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

Progress = Callable[[str], None]

RELEASE = "12.4"
SUITE = "trixie"
# The Debian archive is the one this host's apt already uses (or VLLM_VOLTA_DEBIAN_MIRROR).
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def debian_mirror() -> str:
    """The Debian archive URI from the environment or this host's apt sources."""
    env = os.environ.get("VLLM_VOLTA_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    files = []
    for src in APT_SOURCES:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
        elif src.exists():
            files.append(src)
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            uris = []
            if line.startswith("URIs:"):
                uris = line[len("URIs:"):].split()
            elif line.startswith("deb ") or line.startswith("deb-src "):
                uris = [w for w in line.split() if "://" in w]
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    raise ProvisionError(
        "cannot provision CUDA: no Debian archive found in this host's apt sources; "
        "set VLLM_VOLTA_DEBIAN_MIRROR to a Debian mirror URL (the one ending in /debian)")
KEYRINGS = (
    "/usr/share/keyrings/debian-archive-trixie-automatic.gpg",
    "/usr/share/keyrings/debian-archive-keyring.gpg",
)
# Binary packages of Debian's nvidia-cuda-toolkit source: the compiler driver
# and tools, headers and static libraries, libnvvm, and the shared libraries
# torch's CMake configuration links against.
PACKAGES = (
    "nvidia-cuda-toolkit", "nvidia-cuda-dev", "libnvvm4", "libcudart12",
    "libcublas12", "libcublaslt12", "libcufft11", "libcurand10", "libcusparse12",
    "libcusolver11", "libnvrtc12", "libnvrtc-builtins12.4", "libnvjitlink12",
    "libnvtoolsext1", "libnvfatbin12", "libcupti12", "libcupti-dev", "libnvidia-ml-dev",
)
CCCL = ("nvidia-cuda-cccl-cu12", "12.4.127.post1")
# Bump when the layout below changes: a toolkit made by an older recipe is remade.
RECIPE = 1


class ProvisionError(RuntimeError):
    """The toolkit could not be provisioned; the message says which step failed."""


def toolkit_dir(cache: Path) -> Path:
    return cache / f"cuda-{RELEASE}" / "toolkit"


def manifest_path(cache: Path) -> Path:
    return cache / f"cuda-{RELEASE}" / "manifest.json"


def read_manifest(cache: Path) -> dict | None:
    path = manifest_path(cache)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("recipe") == RECIPE else None


def provision(cache: Path, progress: Progress = print, *, debs_only: bool = False) -> Path:
    """Make (once) and return the provisioned CUDA 12.4 toolkit root.

    One build at a time provisions a cache (a lock; a second waits or says who holds it). The
    packages are unpacked into a fresh folder that replaces ``root`` only once complete, so an
    interrupted or failed run leaves the previous toolkit (or none) and never half of one.
    """
    if read_manifest(cache) and (toolkit_dir(cache) / "bin" / "nvcc").exists():
        return toolkit_dir(cache)
    from ..series import guard  # the checkout/cache lock the series engine uses too
    with guard.hold(f"cuda-{RELEASE}-{_cache_key(cache)}", f"the CUDA {RELEASE} cache in {cache}", progress):
        if read_manifest(cache) and (toolkit_dir(cache) / "bin" / "nvcc").exists():
            return toolkit_dir(cache)  # made by the run we waited for
        return _provision_locked(cache, progress)


def _cache_key(cache: Path) -> str:
    return hashlib.sha256(str(cache.resolve()).encode()).hexdigest()[:12]


def _provision_locked(cache: Path, progress: Progress) -> Path:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ProvisionError(
                f"cannot provision CUDA {RELEASE}: `{tool}` not found (this needs a Debian or "
                "Ubuntu host). Install a CUDA 12.x toolkit yourself and set CUDA_HOME.")
    base = cache / f"cuda-{RELEASE}"
    base.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    progress(f"provisioning CUDA {RELEASE} into {base} (Debian {SUITE} packages, no system install)")
    debs = _fetch_debs(base, progress)
    cccl = _fetch_cccl(base, progress)
    for stale in base.glob("root.partial-*"):  # left by an interrupted run (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    partial = base / f"root.partial-{os.getpid()}"
    partial.mkdir()
    # Unpacking is xz decompression, one core per package: use every core.
    progress(f"  unpacking {len(debs)} packages ({sum(d.stat().st_size for d in debs) / 1e9:.1f} GB)")
    workers = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2, 8))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = {pool.submit(_run, ["dpkg-deb", "-x", str(deb), str(partial)], f"unpacking {deb.name}"): deb
                for deb in sorted(debs, key=lambda d: -d.stat().st_size)}
        for i, job in enumerate(concurrent.futures.as_completed(jobs), 1):
            job.result()
            progress(f"  unpacked [{i}/{len(debs)}] {jobs[job].name}")
    root = base / "root"
    if root.exists():
        old = base / f"root.old-{os.getpid()}"
        os.replace(root, old)
        os.replace(partial, root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, root)
    cccl_dir = base / "cccl"
    if cccl_dir.exists():
        shutil.rmtree(cccl_dir)
    with zipfile.ZipFile(cccl) as zf:
        zf.extractall(cccl_dir)
    tk = toolkit_dir(cache)
    _layout(tk, root, cccl_dir / "nvidia" / "cuda_cccl" / "include")
    _smoke(tk, progress)
    manifest = {
        "recipe": RECIPE,
        "release": RELEASE,
        "source": f"Debian {SUITE} non-free nvidia-cuda-toolkit + PyPI {CCCL[0]}=={CCCL[1]}",
        "debs": {d.name: _sha256(d) for d in debs},
        "cccl_wheel": {cccl.name: _sha256(cccl)},
        "seconds": round(time.monotonic() - start, 1),
    }
    manifest_path(cache).write_text(json.dumps(manifest, indent=2) + "\n")
    progress(f"CUDA {RELEASE} toolkit ready at {tk} in {manifest['seconds']:.0f}s")
    return tk


def _apt_options(apt: Path) -> list[str]:
    keyring = next((k for k in KEYRINGS if Path(k).exists()), None)
    if keyring is None:
        raise ProvisionError(
            "cannot provision CUDA: no Debian archive keyring to check trixie's packages with "
            f"(looked for {', '.join(KEYRINGS)}). Install the debian-archive-keyring package.")
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "sources.list.d").mkdir(exist_ok=True)
    (apt / "preferences.d").mkdir(exist_ok=True)
    (apt / "status").touch()
    (apt / "sources.list").write_text(
        f"deb [signed-by={keyring}] {debian_mirror()} {SUITE} main contrib non-free\n")
    user = getpass.getuser()
    opts = {
        "Dir::Etc::sourcelist": apt / "sources.list",
        "Dir::Etc::sourceparts": apt / "sources.list.d",
        "Dir::Etc::preferencesparts": apt / "preferences.d",
        "Dir::State": apt,
        "Dir::State::lists": apt / "lists",
        "Dir::State::status": apt / "status",
        "Dir::Cache": apt,
        "Dir::Cache::archives": apt / "archives",
        "APT::Architecture": "amd64",
        "APT::Sandbox::User": user,
        "Debug::NoLocking": "1",
    }
    return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]


def _fetch_debs(base: Path, progress: Progress, packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    apt = base / "apt"
    opts = _apt_options(apt)
    progress(f"  apt-get update (private configuration in {apt})")
    _run(["apt-get", *opts, "update"], "apt-get update for Debian trixie")
    debs_dir = base / "debs"
    debs_dir.mkdir(exist_ok=True)
    wanted = []
    for pkg in packages:
        version = _candidate(opts, pkg)
        if not version.startswith(f"{RELEASE}.") and f"~{RELEASE}." not in version:
            raise ProvisionError(
                f"Debian {SUITE} now has {pkg} {version}, not CUDA {RELEASE}; this recipe "
                "needs updating (see docs/build.md).")
        wanted.append(f"{pkg}={version}")
    progress(f"  apt-get download {len(wanted)} packages into {debs_dir}")
    # apt-get download checks each file against the signed index.
    _run(["apt-get", *opts, "download", *wanted], "apt-get download", cwd=debs_dir)
    debs = []
    for spec in wanted:
        pkg, version = spec.split("=")
        matches = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        if not matches:
            raise ProvisionError(f"apt-get download left no {pkg}_*.deb in {debs_dir}")
        debs.append(matches[-1])
    return debs


def _candidate(opts: list[str], pkg: str) -> str:
    out = _run(["apt-cache", *opts, "policy", pkg], f"apt-cache policy {pkg}")
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                return version
    raise ProvisionError(f"Debian {SUITE} has no candidate for {pkg} (apt-cache policy said:\n{out})")


def _fetch_cccl(base: Path, progress: Progress) -> Path:
    dest = base / "wheels"
    dest.mkdir(exist_ok=True)
    name, version = CCCL
    found = sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if found:
        return found[-1]
    progress(f"  pip download {name}=={version}")
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--disable-pip-version-check", "-q", "-d", str(dest), f"{name}=={version}"],
         f"pip download {name}=={version}")
    found = sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise ProvisionError(f"pip download {name}=={version} left no wheel in {dest}")
    return found[-1]


NVCC_PROFILE = """\
# nvcc.profile of the vllm-volta provisioned CUDA {release} toolkit.
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
"""


def _layout(tk: Path, root: Path, cccl_include: Path) -> None:
    """A toolkit folder with the usual shape, pointing into the unpacked packages."""
    if tk.exists():
        shutil.rmtree(tk)
    usr = root / "usr"
    nvbin = usr / "lib" / "nvidia-cuda-toolkit" / "bin"
    libdir = usr / "lib" / "x86_64-linux-gnu"
    (tk / "bin").mkdir(parents=True)
    # nvcc finds nvcc.profile next to its real path, so it is copied, not linked.
    shutil.copy2(nvbin / "nvcc", tk / "bin" / "nvcc")
    (tk / "bin" / "nvcc.profile").write_text(NVCC_PROFILE.format(release=RELEASE))
    (tk / "bin" / "crt").symlink_to(nvbin / "crt")
    for tool in sorted((usr / "bin").iterdir()):
        if tool.name not in ("nvcc", "nvprof") and not (tk / "bin" / tool.name).exists():
            (tk / "bin" / tool.name).symlink_to(tool.resolve() if tool.is_symlink() else tool)
    (tk / "nvvm" / "bin").mkdir(parents=True)
    (tk / "nvvm" / "bin" / "cicc").symlink_to(nvbin / "cicc")
    (tk / "nvvm" / "libdevice").symlink_to(usr / "lib" / "nvidia-cuda-toolkit" / "libdevice")
    (tk / "nvvm" / "lib64").mkdir()
    for lib in libdir.glob("libnvvm.so*"):
        (tk / "nvvm" / "lib64" / lib.name).symlink_to(lib)
    (tk / "nvvm" / "include").mkdir()
    if (usr / "include" / "nvvm.h").exists():
        (tk / "nvvm" / "include" / "nvvm.h").symlink_to(usr / "include" / "nvvm.h")
    (tk / "lib64").symlink_to(libdir)
    include = tk / "include"
    include.mkdir()
    # CCCL from PyPI first: Debian's nvidia-cuda-dev has no cub/thrust/cuda.
    for src in (cccl_include, usr / "include"):
        for entry in sorted(src.iterdir()):
            if entry.name.startswith("__") or (include / entry.name).exists():
                continue
            (include / entry.name).symlink_to(entry)
    (tk / "version.json").write_text(json.dumps(
        {"cuda": {"name": "CUDA SDK", "version": f"{RELEASE}.1"},
         "provisioned_by": "vllm-volta"}, indent=2) + "\n")


def _smoke(tk: Path, progress: Progress) -> None:
    """Compile a kernel for sm_70 and find the cubin: the toolkit works."""
    progress("  checking the toolkit: nvcc -gencode arch=compute_70,code=sm_70")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cu"
        src.write_text('#include <cub/cub.cuh>\n'
                       '__global__ void probe(float* x) { x[threadIdx.x] *= 2.f; }\n')
        obj = Path(tmp) / "probe.o"
        _run([str(tk / "bin" / "nvcc"), "-c", "-gencode", "arch=compute_70,code=sm_70",
              str(src), "-o", str(obj)], "compiling a sm_70 probe kernel")
        listing = _run([str(tk / "bin" / "cuobjdump"), "--list-elf", str(obj)], "cuobjdump")
        if "sm_70" not in listing:
            raise ProvisionError(f"the probe kernel holds no sm_70 cubin:\n{listing}")


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ProvisionError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:3])} ...\n{tail}")
    return proc.stdout


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _one_file_of(package: str, member: str, dest: Path, what: str, progress: Progress) -> Path:
    """Unpack one file of a Debian trixie package to ``dest`` (atomically), fetching the .deb once."""
    for tool in ("apt-get", "dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            raise ProvisionError(f"cannot fetch {what}: `{tool}` not found (needs a Debian or Ubuntu "
                                 "host); set CUDA_HOME to a CUDA 12 toolkit instead")
    base = dest.parents[1]
    base.mkdir(parents=True, exist_ok=True)
    progress(f"fetching {what} (Debian {SUITE} {package}) into {dest.parent}")
    (deb,) = _fetch_debs(base, progress, (package,))
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=base))
    try:
        fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tmp), member], stdin=fsys.stdout, check=True)
        if fsys.wait() != 0:
            raise ProvisionError(f"dpkg-deb could not read {deb}: delete it and run again")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / member, dest)  # atomic: a half-written file is never found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def cuobjdump_only(cache: Path, progress: Progress = print) -> Path:
    """Just cuobjdump (from Debian's nvidia-cuda-toolkit .deb), for verifying a wheel.

    The upstream-kernels route compiles nothing, but verification still lists
    each extension's cubins. cuobjdump is a static binary; unpacking only it
    from the 87 MB package takes seconds. PyPI has no CUDA 12 cuobjdump.
    """
    tk = toolkit_dir(cache)
    if (tk / "bin" / "cuobjdump").exists() and read_manifest(cache):
        return tk / "bin" / "cuobjdump"
    dest = cache / f"cuda-{RELEASE}" / "cuobjdump" / "cuobjdump"
    if dest.exists():
        return dest
    return _one_file_of("nvidia-cuda-toolkit", "./usr/bin/cuobjdump", dest, "cuobjdump", progress)


def driver_stub(cache: Path, progress: Progress = print) -> Path:
    """A folder holding ``libcuda.so.1`` (and ``libcuda.so``): the CUDA driver stub, for loading
    extensions with no GPU.

    vLLM's compiled extensions link against the driver (``libcuda.so.1``),
    which only a GPU host has. The toolkit's stub library answers every
    driver call with "no device", so ``_C`` loads and its ops register on a
    machine without a GPU (import and install tests); Triton links its
    launcher with ``-lcuda``, hence the plain name too. Taken from the
    provisioned toolkit where there is one, else unpacked alone from Debian's
    ``nvidia-cuda-dev`` package (about 0.9 GB to download, 30 s to unpack).
    Never put this folder on a GPU host's library path.
    """
    folder = cache / f"cuda-{RELEASE}" / "driver-stub"
    link = folder / "libcuda.so.1"
    if link.exists() and (folder / "libcuda.so").is_symlink():
        return folder
    tk_stub = toolkit_dir(cache) / "lib64" / "stubs" / "libcuda.so"
    if read_manifest(cache) and tk_stub.exists():
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / ".libcuda.so.1.part"
        shutil.copyfile(tk_stub.resolve(), staged)
        os.replace(staged, link)
    else:
        _one_file_of("nvidia-cuda-dev", "./usr/lib/x86_64-linux-gnu/stubs/libcuda.so", link,
                     "the CUDA driver stub", progress)
    plain = folder / "libcuda.so"
    if not plain.is_symlink():
        plain.unlink(missing_ok=True)
        plain.symlink_to("libcuda.so.1")
    return folder
