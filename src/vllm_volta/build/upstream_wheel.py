"""PyPI's vllm 0.9.2 wheel: the compiled kernels of the upstream-kernels route.

Upstream built it with CUDA 12.8 for SM 7.0 to 12.0; its ``_C`` and
``_moe_C`` carry sm_70 cubins. The file is fetched once into the cache (its
URL from PyPI's simple JSON API), and its size and sha256 must match the
values below, recorded when this project pinned 0.9.2.
"""

from __future__ import annotations

import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from . import verify

Progress = Callable[[str], None]

FILENAME = "vllm-0.9.2-cp38-abi3-manylinux1_x86_64.whl"
SIZE = 383_350_132
SHA256 = "f3c5da29a286f4933b480a5b4749fab226564f35c96928eeef547f88d385cd34"
BUILT_WITH_CUDA = "12.8"
# What its METADATA requires and what that torch pins: the kernels' ABI.
TORCH = "2.7.0"
TRITON = "3.3.0"
# The extensions this route takes; FlashAttention 2/3 and FlashMLA need SM 8.0+
# and are left out, as the source route leaves them out.
TAKEN = tuple(verify.KERNEL_EXTENSIONS)


class UpstreamWheelError(RuntimeError):
    pass


def url_from_index() -> str:
    """The wheel's URL from the index vLLM's sdist comes from (VLLM_VOLTA_SDIST_INDEX_URL, else
    PIP_INDEX_URL, else PyPI); VLLM_VOLTA_INDEX_URL is the upload index and plays no part."""
    from pypi_simple import PyPISimple

    from ..series.upstream import sdist_index
    endpoint, _setting = sdist_index()
    with PyPISimple(endpoint=endpoint) as client:
        page = client.get_project_page("vllm")
    for pkg in page.packages:
        if pkg.filename == FILENAME:
            listed = (pkg.digests or {}).get("sha256")
            if listed not in (None, SHA256):
                raise UpstreamWheelError(f"the index lists {FILENAME} with sha256 {listed}, "
                                         f"not the pinned {SHA256}")
            return pkg.url
    raise UpstreamWheelError(f"the package index lists no {FILENAME} for vllm")


def fetch(cache: Path, progress: Progress = print) -> Path:
    """The verified wheel in the cache (downloaded once)."""
    dest = cache / "wheels" / FILENAME
    if dest.exists():
        _check(dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = url_from_index()
    progress(f"downloading {FILENAME} ({SIZE / 1e6:.0f} MB) from PyPI")
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=120) as resp, part.open("wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)
    _check(part)
    part.rename(dest)
    return dest


def _check(path: Path) -> None:
    size = path.stat().st_size
    if size != SIZE:
        raise UpstreamWheelError(f"{path}: {size} bytes, expected {SIZE}; delete it and build again")
    digest = verify.sha256_file(path)
    if digest != SHA256:
        raise UpstreamWheelError(f"{path}: sha256 {digest}, expected {SHA256}; delete it and build again")


def kernels_only(wheel: Path, out: Path) -> Path:
    """A small zip holding only the extensions this route takes, for setup.py.

    vLLM's setup.py (VLLM_USE_PRECOMPILED) copies every extension it finds in
    the wheel it is given; handing it this subset keeps FlashAttention out.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in TAKEN:
            dst.writestr(src.getinfo(name), src.read(name), compress_type=zipfile.ZIP_STORED)
    return out


def extension_files(wheel: Path) -> dict[str, bytes]:
    """The extensions this route takes, by their path in the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in TAKEN}
