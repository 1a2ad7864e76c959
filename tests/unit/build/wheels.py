"""Synthetic vllm wheels for the verification tests (no build, no CUDA)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

from vllm_volta.build import provenance, wheelfile


def make_wheel(out_dir: Path, version: str, files: dict[str, bytes], *, route: str,
               requires=("torch==2.7.0",), tag: str = "cp38-abi3-linux_x86_64",
               with_provenance: bool = True) -> Path:
    info = f"vllm-{version}.dist-info"
    meta = ["Metadata-Version: 2.4", "Name: vllm", f"Version: {version}",
            *(f"Requires-Dist: {r}" for r in requires)]
    wheel_meta = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n"
    path = out_dir / f"vllm-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("vllm/__init__.py", "")
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/METADATA", "\n".join(meta) + "\n")
        zf.writestr(f"{info}/WHEEL", wheel_meta)
        zf.writestr(f"{info}/RECORD", "")
    extra = {}
    if with_provenance:
        record = provenance.build_record(version=version, route=route, upstream={}, series={},
                                         kernels={}, toolchain={}, tool_version="test")
        extra = provenance.wheel_files(info, record)
    wheelfile.add_files(path, extra)  # also writes a correct RECORD
    return path


def compile_so(tmp: Path, name: str, source: str, *flags: str) -> bytes | None:
    """A real host-only shared object built with gcc; None when gcc is missing."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / f"{name}.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(out), str(src), *flags], check=True)
    return out.read_bytes()
