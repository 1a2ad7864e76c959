"""Small fixture wheels for the ship tests (not real vLLM builds)."""

from __future__ import annotations

import json
from pathlib import Path

from vllm_volta.ship.wheelwrite import write_wheel

PROVENANCE = {"series": "fixture", "patches": 3, "base": "vllm 0.9.2 sdist sha256 6b0d855e"}


def vllm_wheel(out: Path, version: str = "0.9.2+volta.1.empty", *, cuda_ext: bool | None = None,
               provenance: dict | None = PROVENANCE, requires: tuple[str, ...] = (),
               sidecar: bool = True) -> Path:
    """A wheel named like the build wing's vllm wheel; FIXTURE in its summary."""
    if cuda_ext is None:
        cuda_ext = not version.endswith(".empty")
    lines = ["Metadata-Version: 2.1", "Name: vllm", f"Version: {version}",
             "Summary: FIXTURE standing in for vLLM (no real code)", "Requires-Python: >=3.9"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    files = {"vllm/__init__.py": f"__version__ = {version!r}\n".encode()}
    info = {} if provenance is None else {"volta_provenance.json": json.dumps(provenance).encode()}
    if cuda_ext:
        files["vllm/_C.abi3.so"] = b"\x7fELF fixture"
    return write_wheel(out, "vllm", version, metadata="\n".join(lines) + "\n\n", files=files,
                       dist_info_files=info, sidecar=sidecar)
