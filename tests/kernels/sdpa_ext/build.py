"""Build vLLM's PagedAttention decode and cache-write ops as a test extension.

The GPU test of the TORCH_SDPA (CUDA) backend needs the CUDA ops its decode
path calls (``torch.ops._C.paged_attention_v1/v2``,
``torch.ops._C_cache_ops.reshape_and_cache``). A source tree has no compiled
``vllm._C``; this compiles exactly those kernels from the tree's own
``csrc/`` with ``torch.utils.cpp_extension.load`` for the GPU present and
registers them under vLLM's op names (bindings.cpp), so vLLM's Python code
calls them unchanged.

Environment:
    VLLM_VOLTA_SDPA_EXT  path of an already built library: load it, build
                         nothing.
    TORCH_CUDA_ARCH_LIST architectures to build for (default: the GPU's).
    MAX_JOBS             parallel compile jobs (ninja).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
NAME = "vllm_volta_sdpa_ops"

# vLLM sources, relative to csrc/.
SOURCES = (
    "attention/paged_attention_v1.cu",
    "attention/paged_attention_v2.cu",
    "cache_kernels.cu",
)

# vLLM's CMake build (cmake/utils.cmake) takes torch's nvcc flags, adds
# ENABLE_FP8 and drops the half/bfloat16 operator bans for CUDA >= 12;
# cpp_extension puts our flags after torch's, so -U undoes them.
CUDA_FLAGS = [
    "-O3",
    "-DENABLE_FP8",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]


def load_ops(csrc: Path,
             build_dir: Optional[Path] = None,
             verbose: bool = False) -> tuple[str, float]:
    """Build (or load) the ops library; return (library path, seconds)."""
    import torch

    started = time.monotonic()
    prebuilt = os.environ.get("VLLM_VOLTA_SDPA_EXT")
    if prebuilt:
        torch.ops.load_library(prebuilt)
        return prebuilt, time.monotonic() - started

    from torch.utils.cpp_extension import load

    csrc = Path(csrc)
    missing = [s for s in SOURCES if not (csrc / s).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{csrc} lacks {', '.join(missing)}: point VLLM_VOLTA_TREE at a "
            "vLLM 0.9.2 source tree (with csrc/)")
    if build_dir is not None:
        build_dir.mkdir(parents=True, exist_ok=True)
    path = load(
        name=NAME,
        sources=[str(HERE / "bindings.cpp")] + [str(csrc / s) for s in SOURCES],
        extra_include_paths=[str(csrc)],
        extra_cflags=["-O2"],
        extra_cuda_cflags=CUDA_FLAGS,
        build_directory=None if build_dir is None else str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )
    return str(path), time.monotonic() - started
