"""Patch "lora: compile the punica Triton kernels on sm_70".

With --enable-lora the punica shrink/expand kernels must get fp32 dot
operands (DOT_FP32) on compute capability 7.x, where Triton 3.3 cannot
lower an fp16 tl.dot; on 8.0 the launch is unchanged.

CPU only: the kernels are replaced by recorders and the capability is
mocked; neither a GPU nor Triton's compiler is needed.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

import pytest

from .fakes import LaunchRecorder  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the LoRA ops import triton directly")


def _import(name):
    tree = os.environ.get("VLLM_VOLTA_TREE")
    if tree and "vllm" not in sys.modules and tree not in sys.path:
        sys.path.insert(0, tree)
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    return importlib.import_module(name)


shrink = _import("vllm.lora.ops.triton_ops.lora_shrink_op")
expand = _import("vllm.lora.ops.triton_ops.lora_expand_op")


@pytest.fixture
def launch(monkeypatch):
    from vllm.platforms import current_platform
    from vllm.platforms.interface import DeviceCapability, PlatformEnum
    platform_cls = type(current_platform)

    def run(capability):
        cap = DeviceCapability(*capability)
        monkeypatch.setattr(platform_cls, "_enum", PlatformEnum.CUDA)
        monkeypatch.setattr(platform_cls, "get_device_capability",
                            classmethod(lambda cls, device_id=0: cap))
        s, e = LaunchRecorder(), LaunchRecorder()
        monkeypatch.setattr(shrink, "_lora_shrink_kernel", s)
        monkeypatch.setattr(expand, "_lora_expand_kernel", e)
        M, K, R, L = 8, 64, 16, 2
        i32 = torch.int32
        meta = [torch.zeros(M, dtype=i32), torch.arange(M, dtype=i32),
                torch.tensor([M, 0, 0], dtype=i32),
                torch.tensor([0, M, M, M], dtype=i32),
                torch.tensor([0, -1, -1], dtype=i32), torch.tensor([False])]
        shrink._lora_shrink(torch.zeros(M, K, dtype=torch.float16),
                            [torch.zeros(L, R, K, dtype=torch.float16)],
                            torch.zeros(1, M, R), *meta, 1.0)
        expand._lora_expand(torch.zeros(1, M, R),
                            [torch.zeros(L, K, R, dtype=torch.float16)],
                            torch.zeros(M, K, dtype=torch.float16), *meta, 0,
                            True)
        (s_kwargs, ), (e_kwargs, ) = s.calls, e.calls
        return s_kwargs, e_kwargs

    return run


def test_fp32_dot_on_volta(launch):
    for kwargs in launch((7, 0)):
        assert kwargs.get("DOT_FP32") is True


def test_unchanged_on_ampere(launch):
    for kwargs in launch((8, 0)):
        assert "DOT_FP32" not in kwargs
