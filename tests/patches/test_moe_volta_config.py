"""Patch "fused_moe: compile and fit the Triton MoE kernels on sm_70".

On compute capability 7.x the fused MoE config functions must return the
Volta configuration (one stage, four warps, tiles whose fp32 dot operands
fit in 96 KiB of shared memory), the kernels must get the fp32-operand
flag, and w8a8 must be refused with a clear error. On 8.0 nothing changes.

Runs on CPU: the tree under test comes from VLLM_VOLTA_TREE; vllm._C is
stubbed, the device capability is mocked and the Triton kernels are
replaced by recorders, so neither a GPU nor Triton is needed.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

import pytest

VOLTA_MAX_SHARED = 98304


def _import_tree():
    # tests/patches/conftest.py puts the tree first on sys.path; this
    # also works when the module is run on its own with VLLM_VOLTA_TREE.
    tree = os.environ.get("VLLM_VOLTA_TREE")
    if tree and "vllm" not in sys.modules and tree not in sys.path:
        sys.path.insert(0, tree)
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    return importlib.import_module(
        "vllm.model_executor.layers.fused_moe.fused_moe")


fm = _import_tree()


def fp32_dot_shared(config: dict) -> int:
    # A and B tiles in fp32 plus an fp32 output tile: an upper bound of
    # what the kernels take on sm_70 (the AOT kernel test measures it).
    m, n, k = (config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"],
               config["BLOCK_SIZE_K"])
    return (m * k + k * n + m * n) * 4


SHAPES = [
    # (M, E, N, K, topk): Mixtral-8x7B TP1, Qwen1.5-MoE TP2, Qwen3-30B-A3B
    (1, 8, 14336, 4096, 2),
    (256, 8, 14336, 4096, 2),
    (16, 60, 704, 2048, 4),
    (4096, 60, 704, 2048, 4),
    (64, 128, 768, 2048, 8),
]


@pytest.mark.parametrize("M,E,N,K,topk", SHAPES)
def test_default_config_on_volta(capability, M, E, N, K, topk):
    capability(7, 0)
    config = fm.get_default_config(M, E, N, K, topk, None, False)
    assert config["num_stages"] == 1
    assert config["num_warps"] == 4
    assert fp32_dot_shared(config) <= VOLTA_MAX_SHARED


@pytest.mark.parametrize("M,E,N,K,topk", SHAPES)
def test_optimal_config_on_volta(capability, M, E, N, K, topk):
    capability(7, 0)
    config = fm.try_get_optimal_moe_config((E, 2 * N, K), (E, K, N), topk,
                                           None, M)
    assert config["num_stages"] == 1
    assert config["num_warps"] == 4
    assert fp32_dot_shared(config) <= VOLTA_MAX_SHARED


@pytest.mark.parametrize("M,E,N,K,topk", SHAPES)
def test_default_config_unchanged_on_ampere(capability, M, E, N, K, topk):
    capability(8, 0)
    config = fm.get_default_config(M, E, N, K, topk, None, False)
    if M <= E:
        expected = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32,
                    "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1}
    else:
        expected = {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64,
                    "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8}
    assert config == expected


def _shipped_configs():
    folder = Path(fm.__file__).parent / "configs"
    for path in sorted(folder.glob("E=*.json")):
        for batch, config in json.loads(path.read_text()).items():
            if "BLOCK_SIZE_N" in config:
                yield path.name, int(batch), config


def test_every_tuning_file_entry_fits_on_volta(capability, monkeypatch):
    """Whatever a tuning-file lookup returns (all 169 shipped files, every
    batch entry, served through try_get_optimal_moe_config) fits."""
    capability(7, 0)
    entries = list(_shipped_configs())
    assert len(entries) > 1000
    checked = 0
    for name, batch, config in entries:
        monkeypatch.setattr(fm, "get_moe_configs",
                            lambda *args, config=config, batch=batch:
                            {batch: dict(config)})
        got = fm.try_get_optimal_moe_config((8, 1024, 512), (8, 512, 512),
                                            2, None, batch)
        assert got["num_stages"] == 1, name
        assert fp32_dot_shared(got) <= VOLTA_MAX_SHARED, (name, batch, got)
        checked += 1
    assert checked == len(entries)


def test_tuning_file_keeps_tuned_values_when_they_fit(capability,
                                                      monkeypatch):
    capability(7, 0)
    tuned = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64,
             "GROUP_SIZE_M": 16, "num_warps": 8, "num_stages": 3}
    monkeypatch.setattr(fm, "get_moe_configs",
                        lambda *args: {64: dict(tuned)})
    got = fm.try_get_optimal_moe_config((8, 1024, 512), (8, 512, 512), 2,
                                        None, 64)
    assert got == dict(tuned, num_stages=1)


def test_override_config_is_fitted(capability):
    capability(7, 0)
    big = {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 128,
           "GROUP_SIZE_M": 1, "num_warps": 8, "num_stages": 4}
    from vllm.model_executor.layers.fused_moe import override_config
    with override_config(big):
        got = fm.try_get_optimal_moe_config((8, 1024, 512), (8, 512, 512),
                                            2, None, 64)
    assert got["num_stages"] == 1
    assert fp32_dot_shared(got) <= VOLTA_MAX_SHARED


def test_wna16_default_config_on_volta(capability):
    capability(7, 0)
    config = fm.try_get_optimal_moe_config((60, 2816, 1024), (60, 2048, 176),
                                           4,
                                           "int4_w4a16",
                                           1024,
                                           block_shape=[0, 128])
    # BLOCK_SIZE_N/K are chosen later by get_moe_wna16_block_config.
    assert config == {"BLOCK_SIZE_M": 64, "GROUP_SIZE_M": 1,
                      "num_warps": 4, "num_stages": 1}


class _Recorder:
    """Stands in for a @triton.jit kernel: records the launch."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append(kwargs)


def _launch(monkeypatch, quant: str = "none", M: int = 64):
    import torch
    recorder = _Recorder()
    monkeypatch.setattr(fm, "fused_moe_kernel", recorder)
    monkeypatch.setattr(fm, "fused_moe_kernel_gptq_awq", recorder)
    E, N, K, topk = 8, 128, 256, 2
    int4 = quant == "int4"
    config = fm.try_get_optimal_moe_config(
        (E, N, K), (E, K, N // 2), topk,
        "int4_w4a16" if int4 else None, M,
        block_shape=[0, 128] if int4 else None)
    bm = config["BLOCK_SIZE_M"]
    em = M * topk + E * (bm - 1)
    a = torch.zeros(M, K, dtype=torch.float16)
    w = torch.zeros(E, N, K // 2 if int4 else K,
                    dtype=torch.uint8 if int4 else torch.float16)
    scale = torch.zeros(E, K // 128, N) if int4 else None
    fm.invoke_fused_moe_kernel(
        a, w, torch.zeros(M, topk, N, dtype=torch.float16), None, scale,
        None, torch.zeros(M, topk), torch.zeros(em, dtype=torch.int32),
        torch.zeros((em + bm - 1) // bm, dtype=torch.int32),
        torch.zeros(1, dtype=torch.int32), False, topk, config, None,
        use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False,
        use_int4_w4a16=int4, per_channel_quant=False,
        block_shape=[0, 128] if int4 else None)
    (kwargs, ) = recorder.calls
    return kwargs


@pytest.mark.parametrize("quant", ["none", "int4"])
def test_kernel_gets_fp32_dot_on_volta(capability, monkeypatch, quant):
    capability(7, 0)
    kwargs = _launch(monkeypatch, quant, M=1024)
    assert kwargs.get("dot_fp32") is True
    assert kwargs["num_stages"] == 1 and kwargs["num_warps"] == 4


@pytest.mark.parametrize("quant", ["none", "int4"])
def test_kernel_keeps_fp16_dot_on_ampere(capability, monkeypatch, quant):
    capability(8, 0)
    kwargs = _launch(monkeypatch, quant, M=1024)
    assert not kwargs.get("dot_fp32", False)
    assert "num_stages" not in kwargs and "num_warps" not in kwargs


def test_w8a8_is_refused_on_volta(capability):
    import torch
    capability(7, 0)
    config = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64,
              "GROUP_SIZE_M": 1}
    with pytest.raises(NotImplementedError, match="moe_wna16"):
        fm.invoke_fused_moe_kernel(
            torch.zeros(4, 64, dtype=torch.int8),
            torch.zeros(2, 32, 64, dtype=torch.int8),
            torch.zeros(4, 1, 32, dtype=torch.float16), torch.ones(4, 1),
            torch.ones(2, 32, 1), None, torch.zeros(4, 1),
            torch.zeros(64, dtype=torch.int32),
            torch.zeros(4, dtype=torch.int32),
            torch.zeros(1, dtype=torch.int32), False, 1, config, None,
            use_fp8_w8a8=False, use_int8_w8a8=True, use_int8_w8a16=False,
            use_int4_w4a16=False, per_channel_quant=True)
