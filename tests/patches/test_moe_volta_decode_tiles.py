"""Patch "fused_moe: take measured 16x64x64 tiles for Volta MoE decode".

On compute capability 7.x, for decode batches (M <= VOLTA_MOE_DECODE_MAX_M)
of unquantized experts, whatever config the MoE path picks (tuning-file
entry, override, default) must have BLOCK_SIZE_K <= 64, and without a
tuning file the tiles are the measured 16x64x64; larger batches,
quantized configs and 8.0 keep their tiles.

Runs on CPU: vllm._C is stubbed and the device capability is mocked.
"""
from __future__ import annotations

import importlib

import pytest

fm = importlib.import_module("vllm.model_executor.layers.fused_moe.fused_moe")

TUNED = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128,
         "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}
W1, W2 = (8, 2 * 3584, 4096), (8, 4096, 3584)  # Mixtral-8x7B at TP 4


@pytest.fixture
def tuned_k128(monkeypatch):
    monkeypatch.setattr(fm, "get_moe_configs",
                        lambda *args: {1: dict(TUNED), 1024: dict(TUNED)})


@pytest.mark.parametrize("M", [1, 2, 8, 16, 32, 64])
def test_decode_tile_k_is_64_on_volta(capability, tuned_k128, M):
    capability(7, 0)
    got = fm.try_get_optimal_moe_config(W1, W2, 2, None, M)
    assert got["BLOCK_SIZE_K"] == 64
    assert got == dict(TUNED, BLOCK_SIZE_K=64, num_stages=1)


@pytest.mark.parametrize("M", [1, 8, 64])
def test_decode_override_k_is_capped_on_volta(capability, M):
    capability(7, 0)
    from vllm.model_executor.layers.fused_moe import override_config
    with override_config(dict(TUNED)):
        got = fm.try_get_optimal_moe_config(W1, W2, 2, None, M)
    assert got["BLOCK_SIZE_K"] == 64


@pytest.mark.parametrize("M", [1, 2, 8, 16, 64])
def test_default_decode_config_on_volta(capability, M):
    """Without a tuning file, decode batches take the measured 16x64x64."""
    capability(7, 0)
    got = fm.try_get_optimal_moe_config(W1, W2, 2, None, M)
    tiles = {k: got[k] for k in ("BLOCK_SIZE_M", "BLOCK_SIZE_N",
                                 "BLOCK_SIZE_K")}
    assert tiles == {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64,
                     "BLOCK_SIZE_K": 64}
    assert got["num_stages"] == 1


@pytest.mark.parametrize("M", [65, 256, 4096])
def test_default_prefill_config_on_volta(capability, M):
    capability(7, 0)
    got = fm.try_get_optimal_moe_config(W1, W2, 2, None, M)
    assert got["BLOCK_SIZE_K"] <= 64
    assert (got["BLOCK_SIZE_M"], got["BLOCK_SIZE_N"]) == (64, 64)


def test_prefill_keeps_tuned_k_on_volta(capability, tuned_k128):
    capability(7, 0)
    got = fm.try_get_optimal_moe_config(W1, W2, 2, None,
                                        fm.VOLTA_MOE_DECODE_MAX_M + 1)
    assert got["BLOCK_SIZE_K"] == 128


def test_quantized_keeps_tuned_k_on_volta(capability, tuned_k128):
    capability(7, 0)
    got = fm.try_get_optimal_moe_config(W1, W2, 2, "int8_w8a16", 1)
    assert got["BLOCK_SIZE_K"] == 128


def test_ampere_keeps_tuned_k(capability, tuned_k128):
    capability(8, 0)
    got = fm.try_get_optimal_moe_config(W1, W2, 2, None, 1)
    assert got == TUNED
