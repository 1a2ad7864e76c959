"""Environment for vLLM's setup.py in the source route.

Kept apart from the route logic so tests can check it without building:
the SM 7.0 arch list, the CUDA 12 toolkit first on PATH, CUTLASS from a
local folder (no FetchContent download), a Release build (no debug info,
which would carry build-host paths), and ``-ffile-prefix-map`` so that
``__FILE__`` strings in the objects name ``vllm/csrc/...`` instead of the
staging folder, the cache or the home directory.
"""

from __future__ import annotations

import os
from pathlib import Path

ARCH_LIST = "7.0"


def prefix_maps(stage: Path, cache: Path, extra: dict[Path, str] | None = None) -> list[str]:
    """``-ffile-prefix-map`` flags, most general first (GCC uses the last match)."""
    maps: dict[Path, str] = {Path.home(): "~", cache: "vllm-volta-cache"}
    maps.update(extra or {})
    maps[stage] = "vllm"
    return [f"-ffile-prefix-map={Path(k)}={v}" for k, v in maps.items()]


def source_env(*, base: dict[str, str], toolkit: Path, python_bin: Path, stage: Path, cache: Path,
               cutlass_dir: Path, version: str, jobs: int, extra_maps: dict[Path, str] | None = None
               ) -> dict[str, str]:
    maps = prefix_maps(stage, cache, extra_maps)
    env = dict(base)
    for var in ("CUDA_PATH", "CUDACXX", "VLLM_USE_PRECOMPILED", "VLLM_PRECOMPILED_WHEEL_LOCATION",
                "VLLM_FLASH_ATTN_SRC_DIR", "FLASH_MLA_SRC_DIR"):
        env.pop(var, None)
    env.update({
        "PATH": os.pathsep.join([str(toolkit / "bin"), str(python_bin), base.get("PATH", "")]),
        "CUDA_HOME": str(toolkit),
        "CUDAToolkit_ROOT": str(toolkit),
        "TORCH_CUDA_ARCH_LIST": ARCH_LIST,
        "VLLM_TARGET_DEVICE": "cuda",
        "VLLM_CUTLASS_SRC_DIR": str(cutlass_dir),
        "CMAKE_BUILD_TYPE": "Release",
        "MAX_JOBS": str(jobs),
        "NVCC_THREADS": "1",
        "CXXFLAGS": " ".join(maps),
        "CFLAGS": " ".join(maps),
        "CUDAFLAGS": " ".join(f"-Xcompiler={m}" for m in maps),
        "VLLM_VERSION_OVERRIDE": version,
        "SETUPTOOLS_SCM_PRETEND_VERSION": version,
    })
    return env
