"""Build vLLM's own CUDA ops from a tree's csrc/ as one test-only library.

A source tree has no compiled ``vllm._C``. The kernel tests (tests/kernels)
and the engine tests (tests/engine) need the ops vLLM's Python code calls on
the Volta path; this compiles exactly those kernels from the tree's own
``csrc/``, unchanged, with ``torch.utils.cpp_extension.load`` for the GPU
present, and registers them under vLLM's op names (bindings.cpp): the
attention decode and cache ops, activations, RMS norm, rotary embedding,
repetition penalties and the MoE routing ops. A V100 host with the +volta
wheel has the real ``vllm._C`` and needs none of this.

The only addition is compat_cccl3.h, force-included: CUDA 13's CCCL dropped
two functors the norm and top-k kernels use.

Environment:
    VLLM_VOLTA_OPS_EXT    path of an already built library: load it, build
                          nothing.
    TORCH_CUDA_ARCH_LIST  architectures to build for (default: the GPU's).
    MAX_JOBS              parallel compile jobs (ninja).

``python -m tests.support.vllm_ops.build CSRC OUTDIR`` builds and prints
the library's path (the device runs keep it between calls).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
NAME = "vllm_volta_test_ops"

# vLLM sources, relative to csrc/, and the ops each provides.
SOURCES = {
    "attention/paged_attention_v1.cu": ("_C.paged_attention_v1",),
    "attention/paged_attention_v2.cu": ("_C.paged_attention_v2",),
    "cache_kernels.cu": ("_C_cache_ops.reshape_and_cache",
                         "_C_cache_ops.reshape_and_cache_flash",
                         "_C_cache_ops.copy_blocks",
                         "_C_cache_ops.swap_blocks"),
    "activation_kernels.cu": ("_C.silu_and_mul", "_C.mul_and_silu",
                              "_C.gelu_and_mul", "_C.gelu_tanh_and_mul",
                              "_C.fatrelu_and_mul", "_C.gelu_new",
                              "_C.gelu_fast", "_C.gelu_quick"),
    "layernorm_kernels.cu": ("_C.rms_norm", "_C.fused_add_rms_norm"),
    "pos_encoding_kernels.cu": ("_C.rotary_embedding",
                                "_C.batched_rotary_embedding"),
    "sampler.cu": ("_C.apply_repetition_penalties_",),
    "moe/topk_softmax_kernels.cu": ("_moe_C.topk_softmax",),
    "moe/moe_align_sum_kernels.cu": ("_moe_C.moe_align_block_size",
                                     "_moe_C.moe_sum"),
    "attention/merge_attn_states.cu": ("_C.merge_attn_states",),
    "quantization/gptq/q_gemm.cu": ("_C.gptq_gemm", "_C.gptq_shuffle"),
    "moe/moe_wna16.cu": ("_moe_C.moe_wna16_gemm",),
}
# Defined inline in csrc/ops.h, registered by bindings.cpp.
HEADER_OPS = ("_C.weak_ref_tensor",)

# vLLM's CMake build (cmake/utils.cmake) takes torch's nvcc flags, adds
# ENABLE_FP8 (and NDEBUG, from its RelWithDebInfo build type) and drops the
# half/bfloat16 operator bans for CUDA >= 12; cpp_extension puts our flags
# after torch's, so -U undoes them.
# Host asserts compile away as in vLLM's own builds (topk_softmax_kernels.cu
# asserts on at::ScalarType::Int64, a name torch 2.11 no longer has).
CUDA_FLAGS = [
    "-O3",
    "-DNDEBUG",
    "-DENABLE_FP8",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
    "-include", str(HERE / "compat_cccl3.h"),
]


def op_names() -> tuple[str, ...]:
    """Every op the library registers, as ``namespace.name``."""
    return tuple(op for ops in SOURCES.values() for op in ops) + HEADER_OPS


def load_ops(csrc: Path,
             build_dir: Optional[Path] = None,
             verbose: bool = False) -> tuple[str, float]:
    """Build (or load) the ops library; return (library path, seconds)."""
    import torch

    started = time.monotonic()
    prebuilt = os.environ.get("VLLM_VOLTA_OPS_EXT")
    if prebuilt:
        if not Path(prebuilt).is_file():
            raise FileNotFoundError(
                f"VLLM_VOLTA_OPS_EXT={prebuilt}: no such file; unset it to "
                "build the library from the tree's csrc/")
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
        extra_cflags=["-O2", "-DNDEBUG"],
        extra_cuda_cflags=CUDA_FLAGS,
        build_directory=None if build_dir is None else str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )
    return str(path), time.monotonic() - started


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.support.vllm_ops.build CSRC OUTDIR",
              file=sys.stderr)
        return 2
    path, seconds = load_ops(Path(argv[0]), Path(argv[1]), verbose=False)
    print(f"built {path} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
