"""Patch "prefix_prefill: compile and fit the Triton kernels on sm_70".

context_attention_fwd (xformers backend with prefix caching or chunked
prefill) must, on compute capability 7.x, launch its kernels with fp32
dot operands (DOT_FP32) and tiles that fit in 96 KiB of shared memory;
on 8.0 the launch is unchanged (128x64 tiles, no DOT_FP32).

CPU only: the kernels are replaced by recorders, the capability is
mocked, vllm._C is stubbed; neither a GPU nor Triton is needed.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
import types

import pytest

from .fakes import LaunchRecorder  # noqa: E402

torch = pytest.importorskip("torch")


def _import_tree():
    # tests/patches/conftest.py puts the tree first on sys.path; this
    # also works when the module is run on its own with VLLM_VOLTA_TREE.
    tree = os.environ.get("VLLM_VOLTA_TREE")
    if tree and "vllm" not in sys.modules and tree not in sys.path:
        sys.path.insert(0, tree)
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    return importlib.import_module("vllm.attention.ops.prefix_prefill")


pp = _import_tree()


@pytest.fixture
def launch(monkeypatch):
    """launch(capability, head_size, alibi) -> kwargs of the kernel call"""
    from vllm.platforms.interface import DeviceCapability, PlatformEnum
    platform_cls = type(pp.current_platform)

    def run(capability, head_size, alibi=False):
        cap = DeviceCapability(*capability)
        monkeypatch.setattr(platform_cls, "_enum", PlatformEnum.CUDA)
        monkeypatch.setattr(platform_cls, "get_device_capability",
                            classmethod(lambda cls, device_id=0: cap))
        # Triton may be absent or disabled on a CPU machine.
        monkeypatch.setattr(
            pp, "triton",
            types.SimpleNamespace(
                next_power_of_2=lambda n: 1 << (n - 1).bit_length(),
                cdiv=lambda a, b: -(-a // b)))
        recorder = LaunchRecorder()
        monkeypatch.setattr(pp, "_fwd_kernel", recorder)
        monkeypatch.setattr(pp, "_fwd_kernel_alibi", recorder)
        T, H, Hkv, B, bs = 8, 4, 2, 2, 16
        x = 8
        q = torch.zeros(T, H, head_size, dtype=torch.float16)
        kv = torch.zeros(T, Hkv, head_size, dtype=torch.float16)
        k_cache = torch.zeros(4, Hkv, head_size // x, bs, x,
                              dtype=torch.float16)
        v_cache = torch.zeros(4, Hkv, head_size, bs, dtype=torch.float16)
        pp.context_attention_fwd(
            q, kv, kv, torch.zeros_like(q), "auto", k_cache, v_cache,
            torch.zeros(B, 4, dtype=torch.int32),
            torch.tensor([0, 4, 8], dtype=torch.int32),
            torch.tensor([20, 20], dtype=torch.int32), 20, 4,
            torch.ones(1), torch.ones(1),
            alibi_slopes=torch.ones(H) if alibi else None)
        (kwargs, ) = recorder.calls
        return kwargs

    return run


def fp32_tiles_shared(kwargs) -> int:
    # q tile, the two K/V tiles and the score tile, all fp32: a bound of
    # the kernel's shared memory (tests/kernels/test_aot_sm70.py measures).
    d = kwargs["BLOCK_DMODEL_PADDED"]
    m, n = kwargs["BLOCK_M"], kwargs["BLOCK_N"]
    n = max(n, kwargs.get("BLOCK_SIZE", n))
    return 4 * (m * d + 2 * n * d + m * n)


@pytest.mark.parametrize("head_size", [64, 80, 128, 256])
def test_fp32_dot_and_small_tiles_on_volta(launch, head_size):
    kwargs = launch((7, 0), head_size)
    assert kwargs["DOT_FP32"] is True
    assert kwargs["num_stages"] == 1
    assert fp32_tiles_shared(kwargs) <= 98304
    assert kwargs["BLOCK_M"] * kwargs["BLOCK_N"] <= 64 * 16


@pytest.mark.parametrize("head_size", [64, 128, 256])
def test_alibi_kernel_on_volta(launch, head_size):
    kwargs = launch((7, 0), head_size, alibi=True)
    assert kwargs["DOT_FP32"] is True
    assert fp32_tiles_shared(kwargs) <= 98304


@pytest.mark.parametrize("head_size", [64, 128, 256])
def test_unchanged_on_ampere(launch, head_size):
    kwargs = launch((8, 0), head_size)
    assert "DOT_FP32" not in kwargs
    assert (kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["num_warps"]) == (
        128, 64, 4)
    alibi = launch((8, 0), head_size, alibi=True)
    assert "DOT_FP32" not in alibi or alibi["DOT_FP32"] is False
    assert math.log2(alibi["BLOCK_M"]).is_integer()
