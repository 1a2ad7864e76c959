"""CPU kernels of the two vLLM activation ops the fused MoE calls.

``torch.ops._C.silu_and_mul`` and ``torch.ops._C.gelu_and_mul`` come from
vLLM's compiled extension, which a source tree on a CPU machine lacks.
``register()`` defines them under ``torch.ops._C`` with vLLM's schema
(csrc/torch_bindings.cpp) and a CPU kernel computing what
csrc/activation_kernels.cu computes: the activation of the first half of
the last dimension in fp32, rounded to the input dtype, times the second
half. Ops that already exist (a real or test-built library) are left as
they are.
"""
from __future__ import annotations

import torch

_LIB = None


def _act_and_mul(act):

    def kernel(out: torch.Tensor, x: torch.Tensor) -> None:
        d = x.size(-1) // 2
        gate = act(x[..., :d].float()).to(x.dtype)
        torch.mul(gate, x[..., d:], out=out)

    return kernel


_KERNELS = {
    "silu_and_mul": _act_and_mul(torch.nn.functional.silu),
    "gelu_and_mul": _act_and_mul(torch.nn.functional.gelu),
}


def register() -> None:
    """Define the missing activation ops with their CPU kernels (once)."""
    global _LIB
    if _LIB is not None:
        return
    _LIB = torch.library.Library("_C", "FRAGMENT")
    for name, kernel in _KERNELS.items():
        if hasattr(torch.ops._C, name):
            continue
        _LIB.define(f"{name}(Tensor! result, Tensor input) -> ()")
        _LIB.impl(name, kernel, "CPU")
