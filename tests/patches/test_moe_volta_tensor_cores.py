"""Patch "fused_moe: run the Volta MoE prefill GEMMs on tensor cores".

On compute capability 7.x an unquantized fp16 fused MoE of at least
VOLTA_MOE_TC_MIN_TOKENS tokens (VLLM_VOLTA_MOE_TC_MIN_TOKENS overrides it)
must run as per-expert fp16 GEMMs (torch.mm, cuBLAS on a GPU) and not
reach the Triton kernel; below the threshold, with quantized experts and
on 8.0 the Triton path is taken as before.

Runs on CPU: vllm._C is stubbed, the capability is mocked, the Triton
entry points (moe_align_block_size, invoke_fused_moe_kernel) are replaced
by a stand-in that raises, and the two activation ops get CPU kernels
(tests/support/moe_cpu_ops.py). The result is compared with a float64
MoE from the same fp16 values.

Tolerance: the fp16 path rounds the first GEMM's output, the activation,
the second GEMM's output (and the routed-weight products) and the sum, each
at most 2**-11 relative; as in tests/kernels/test_moe_gpu.py the error is
measured per token against the rms of its reference row and allowed 1.5e-2.
"""
from __future__ import annotations

import importlib
import math
import types

import pytest
import torch

from tests.support import moe_cpu_ops

fm = importlib.import_module("vllm.model_executor.layers.fused_moe.fused_moe")

TOLERANCE = 1.5e-2
HIDDEN, INTER = 128, 96


class TritonPathTaken(Exception):
    pass


@pytest.fixture(autouse=True)
def cpu_ops():
    moe_cpu_ops.register()


@pytest.fixture
def capability(capability, monkeypatch):
    """The conftest's capability(major, minor), with the Triton entry
    points raising TritonPathTaken."""
    def triton_path(*args, **kwargs):
        raise TritonPathTaken

    monkeypatch.setattr(fm, "moe_align_block_size", triton_path)
    monkeypatch.setattr(fm, "invoke_fused_moe_kernel", triton_path)
    if not hasattr(fm.tl, "float16"):
        # No Triton here (vllm.triton_utils placeholder): fused_experts_impl
        # names its compute type before it picks a path.
        monkeypatch.setattr(fm, "tl", types.SimpleNamespace(
            float16="fp16", bfloat16="bf16", float32="fp32"))

    return capability


def inputs(M, E, top_k, seed=0, skewed=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, HIDDEN, generator=g).half()
    w1 = (torch.randn(E, 2 * INTER, HIDDEN, generator=g) /
          math.sqrt(HIDDEN)).half()
    w2 = (torch.randn(E, HIDDEN, INTER, generator=g) /
          math.sqrt(INTER)).half()
    logits = torch.randn(M, E, generator=g)
    if skewed:  # most tokens pick expert 0
        logits[:, 0] += 4.0
    topk_w, topk_ids = torch.softmax(logits, dim=-1).topk(top_k, dim=-1)
    return x, w1, w2, topk_w.contiguous(), topk_ids.to(torch.int32)


def reference(x, w1, w2, topk_w, topk_ids, activation="silu",
              on_input=False, expert_map=None):
    """float64 MoE from the same fp16 values, no intermediate rounding."""
    act = (torch.nn.functional.silu
           if activation == "silu" else torch.nn.functional.gelu)
    out = torch.zeros(x.shape, dtype=torch.float64)
    x64 = x.double()
    for e in topk_ids.unique().tolist():
        local = e if expert_map is None else int(expert_map[e])
        if local < 0:
            continue
        tokens, slots = (topk_ids == e).nonzero(as_tuple=True)
        weight = topk_w[tokens, slots].double().unsqueeze(-1)
        h = x64[tokens] @ w1[local].double().t()
        if on_input:
            h = h * weight
        gate, up = h.chunk(2, dim=-1)
        y = (act(gate) * up) @ w2[local].double().t()
        if not on_input:
            y = y * weight
        out.index_add_(0, tokens, y)
    return out


def per_token_error(out, ref) -> float:
    rms = ref.pow(2).mean(dim=-1).sqrt().clamp_min(1e-30)
    return ((out.double() - ref).abs().amax(dim=-1) / rms).max().item()


def run(x, w1, w2, topk_w, topk_ids, inplace=False, **kwargs):
    hidden = x.clone()
    out = fm.fused_experts_impl(hidden, w1, w2, topk_w, topk_ids, inplace,
                                **kwargs)
    if inplace:
        assert out is hidden
    return out


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("skewed", [False, True])
@pytest.mark.parametrize("top_k,E", [(2, 8), (1, 8), (8, 16)])
def test_fused_experts_runs_prefill_on_tensor_cores(capability, monkeypatch,
                                                    top_k, E, skewed,
                                                    inplace):
    capability(7, 0)
    used = []
    for name in ("_volta_experts_batched", "_volta_experts_looped"):
        monkeypatch.setattr(
            fm, name, lambda *a, fn=getattr(fm, name), name=name:
            (used.append(name), fn(*a))[1])
    M = fm.VOLTA_MOE_TC_MIN_TOKENS + 37
    x, w1, w2, topk_w, topk_ids = inputs(M, E, top_k, seed=top_k * 7 + E,
                                         skewed=skewed)
    out = run(x, w1, w2, topk_w, topk_ids, inplace)
    assert out.dtype == torch.float16 and out.shape == x.shape
    err = per_token_error(out, reference(x, w1, w2, topk_w, topk_ids))
    assert err <= TOLERANCE, err
    # One batched GEMM over the experts padded to the largest while that
    # at most doubles the rows, else a GEMM per expert.
    padded = E * torch.bincount(topk_ids.flatten().long()).max().item()
    looped = padded > fm.VOLTA_MOE_TC_MAX_PADDING * topk_ids.numel()
    assert used == ["_volta_experts_looped"
                    if looped else "_volta_experts_batched"]
    if top_k < 8:  # top-8 of 16 cannot skew past twice the rows
        assert looped == skewed


@pytest.mark.parametrize("skewed", [False, True])
@pytest.mark.parametrize("activation", ["silu", "gelu"])
@pytest.mark.parametrize("on_input", [False, True])
def test_activation_and_router_weight_placement(capability, activation,
                                                on_input, skewed):
    capability(7, 0)
    x, w1, w2, topk_w, topk_ids = inputs(300, 8, 1 if on_input else 2,
                                         seed=3, skewed=skewed)
    out = run(x, w1, w2, topk_w, topk_ids, activation=activation,
              apply_router_weight_on_input=on_input)
    ref = reference(x, w1, w2, topk_w, topk_ids, activation, on_input)
    assert per_token_error(out, ref) <= TOLERANCE
    # The other placement gives another result: the flag was honoured.
    other = reference(x, w1, w2, topk_w, topk_ids, activation, not on_input)
    assert per_token_error(out, other) > 10 * TOLERANCE


@pytest.mark.parametrize("skewed", [False, True])
def test_expert_map_drops_experts_of_other_ranks(capability, skewed):
    capability(7, 0)
    x, w1, w2, topk_w, topk_ids = inputs(300, 8, 2, seed=5, skewed=skewed)
    # This rank holds global experts 1, 4, 6 and 7 as local 0..3.
    expert_map = torch.full((8, ), -1, dtype=torch.int32)
    expert_map[torch.tensor([1, 4, 6, 7])] = torch.arange(4,
                                                          dtype=torch.int32)
    out = run(x, w1[:4], w2[:4], topk_w, topk_ids, global_num_experts=8,
              expert_map=expert_map)
    ref = reference(x, w1[:4], w2[:4], topk_w, topk_ids,
                    expert_map=expert_map)
    assert per_token_error(out, ref) <= TOLERANCE
    # Tokens routed to no local expert get exact zeros.
    none_local = (expert_map[topk_ids.long()] < 0).all(dim=1)
    assert none_local.any()
    assert torch.equal(out[none_local], torch.zeros_like(out[none_local]))


def test_direct_call_matches_reference():
    x, w1, w2, topk_w, topk_ids = inputs(50, 8, 2, seed=11)
    # No slot on this rank's experts: zeros.
    out = torch.full_like(x, 7.0)
    none = torch.full((8, ), -1, dtype=torch.int32)
    fm.volta_tensor_core_experts(x, w1, w2, topk_w, topk_ids, out,
                                 expert_map=none)
    assert torch.equal(out, torch.zeros_like(out))
    out = torch.empty_like(x)
    got = fm.volta_tensor_core_experts(x, w1, w2, topk_w, topk_ids, out)
    assert got is out
    ref = reference(x, w1, w2, topk_w, topk_ids)
    assert per_token_error(out, ref) <= TOLERANCE


def test_chunks_below_the_threshold_keep_triton(capability, monkeypatch):
    capability(7, 0)
    monkeypatch.setenv("VLLM_FUSED_MOE_CHUNK_SIZE", "256")
    x, w1, w2, topk_w, topk_ids = inputs(256 + 16, 8, 2, seed=13)
    # The first chunk (256 tokens) takes the tensor-core path, the last
    # (16 tokens) reaches the Triton kernel.
    with pytest.raises(TritonPathTaken):
        run(x, w1, w2, topk_w, topk_ids)


@pytest.mark.parametrize("M", ["1", "32", "threshold-1"])
def test_decode_sizes_keep_triton(capability, M):
    capability(7, 0)
    M = fm.VOLTA_MOE_TC_MIN_TOKENS - 1 if M == "threshold-1" else int(M)
    x, w1, w2, topk_w, topk_ids = inputs(M, 8, 2)
    with pytest.raises(TritonPathTaken):
        run(x, w1, w2, topk_w, topk_ids)


def test_threshold_env_override(capability, monkeypatch):
    capability(7, 0)
    x, w1, w2, topk_w, topk_ids = inputs(40, 8, 2, seed=17)
    with pytest.raises(TritonPathTaken):
        run(x, w1, w2, topk_w, topk_ids)
    monkeypatch.setenv("VLLM_VOLTA_MOE_TC_MIN_TOKENS", "32")
    assert fm.volta_moe_tc_min_tokens() == 32
    out = run(x, w1, w2, topk_w, topk_ids)
    assert per_token_error(out, reference(x, w1, w2, topk_w,
                                          topk_ids)) <= TOLERANCE
    monkeypatch.setenv("VLLM_VOLTA_MOE_TC_MIN_TOKENS", "100000")
    big = inputs(fm.VOLTA_MOE_TC_MIN_TOKENS * 2, 8, 2)
    with pytest.raises(TritonPathTaken):
        run(*big)


def test_ampere_keeps_triton(capability):
    capability(8, 0)
    x, w1, w2, topk_w, topk_ids = inputs(fm.VOLTA_MOE_TC_MIN_TOKENS * 2, 8,
                                         2)
    with pytest.raises(TritonPathTaken):
        run(x, w1, w2, topk_w, topk_ids)


def test_quantized_experts_keep_triton(capability):
    capability(7, 0)
    x, w1, w2, topk_w, topk_ids = inputs(fm.VOLTA_MOE_TC_MIN_TOKENS * 2, 8,
                                         2)
    scale = torch.ones(8, 2 * INTER)
    with pytest.raises(TritonPathTaken):
        run(x, w1.to(torch.int8), w2.to(torch.int8), topk_w, topk_ids,
            use_int8_w8a16=True, w1_scale=scale,
            w2_scale=torch.ones(8, HIDDEN))
