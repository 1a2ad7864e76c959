"""Reference implementations of the vLLM ops the test library cannot build.

Only ops off the Volta path qualify, and each is named in the engine
record. These are the CUTLASS capability queries of
csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu: vLLM asks them at
import time (quantization/utils/w8a8_utils.py, reached from every fused-MoE
model), and their source needs CUTLASS, which a source tree does not carry.
Same thresholds as that file; on compute capability 7.0 all answer False.
"""
from __future__ import annotations

import torch

REFERENCE_OPS = ("_C.cutlass_scaled_mm_supports_fp8",
                 "_C.cutlass_scaled_mm_supports_block_fp8",
                 "_C.cutlass_group_gemm_supported",
                 "_C.cutlass_sparse_scaled_mm_supported")


def _cuda() -> int:
    major, minor = (int(x) for x in (torch.version.cuda or "0.0").split(".")[:2])
    return major * 1000 + minor * 10


def supports_fp8(cc: int) -> bool:
    if cc >= 90:
        return _cuda() >= 12000
    return cc >= 89 and _cuda() >= 12040


def supports_block_fp8(cc: int) -> bool:
    if 90 <= cc < 100:
        return _cuda() >= 12000
    return cc >= 100 and _cuda() >= 12080


def group_gemm_supported(cc: int) -> bool:
    return cc == 90 and _cuda() >= 12030


def sparse_supported(cc: int) -> bool:
    return cc >= 90 and _cuda() >= 12020


_IMPLS = {
    "cutlass_scaled_mm_supports_fp8": supports_fp8,
    "cutlass_scaled_mm_supports_block_fp8": supports_block_fp8,
    "cutlass_group_gemm_supported": group_gemm_supported,
    "cutlass_sparse_scaled_mm_supported": sparse_supported,
}
_LIB = None


def register() -> None:
    """Register the ops under torch.ops._C (once)."""
    global _LIB
    if _LIB is not None:
        return
    _LIB = torch.library.Library("_C", "FRAGMENT")
    for name, fn in _IMPLS.items():
        if hasattr(torch.ops._C, name):
            continue
        _LIB.define(f"{name}(int cuda_device_capability) -> bool")
        _LIB.impl(name, fn, "CompositeImplicitAutograd")
