"""TORCH_SDPA (CUDA) applies attention logit soft-capping (Gemma 2).

Patch: "attention: soft-cap attention logits in TORCH_SDPA on CUDA".

Gemma 2 caps its attention scores: s -> cap * tanh(s / cap) before the
softmax. Neither torch SDPA nor the PagedAttention kernels can, and the
backend used to log a warning and run uncapped. With the patch, layers with
a soft cap compute their scores explicitly: prefill a chunk of queries at a
time (query heads folded onto their kv head), decode through
forward_decode_torch (chunked online softmax over the paged cache).

Checked on CPU tensors against a dense float64 reference (full attention
matrix, causal + window mask, soft cap) over each sequence's history, on a
paged cache filled by hand whose unwritten slots hold NaN.
"""
import types

import importlib.util

import pytest
import torch

from .paged_reference import (Layer, backend, ref, use_reference_kernels,  # noqa: E402
                              use_reference_varlen)

ATOL = {torch.float32: 2e-5, torch.float16: 1e-2}
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
]
# Small enough against the scores below (|s| up to ~10) that capping
# changes the result by O(0.1), as Gemma 2's cap of 50 does on its logits.
CAP = 3.0
# Queries are scaled up so that the scores reach the cap.
Q_GAIN = 4.0
WINDOW = 32
HEAD = 64
SCALE = HEAD**-0.5


@pytest.fixture
def engine(monkeypatch):
    """An engine config for an interleaved model (Gemma 2): no model-level
    window, so the runner trims no block table."""
    import vllm.config
    monkeypatch.setattr(
        vllm.config, "_current_vllm_config",
        types.SimpleNamespace(model_config=types.SimpleNamespace(
            get_sliding_window=lambda: None)))


@pytest.fixture
def kernel_calls(monkeypatch):
    """Torch stand-ins for the CUDA-only cache write and decode kernel
    (no soft cap, no window: what paged_attention_v1/v2 compute)."""
    return use_reference_kernels(monkeypatch)


def dense(q, k, v, scale, cap=None, window=None, causal=True, alibi=None):
    """Float64 attention of the last q.shape[0] positions over all keys:
    full score matrix, soft cap, ALiBi, causal + window mask."""
    q_len, heads, _ = q.shape
    kv_len, kv_heads, _ = k.shape
    kv_index = torch.arange(heads) // (heads // kv_heads)
    k64, v64 = k.double()[:, kv_index], v.double()[:, kv_index]
    scores = torch.einsum("qhd,khd->hqk", q.double(), k64) * scale
    if cap is not None:
        scores = cap * torch.tanh(scores / cap)
    q_pos = torch.arange(kv_len - q_len, kv_len)
    k_pos = torch.arange(kv_len)
    if alibi is not None:
        rel = (k_pos[None, :] - q_pos[:, None]).double()
        scores = scores + alibi.double()[:, None, None] * rel
    if causal:
        dist = q_pos[:, None] - k_pos[None, :]
        allowed = dist >= 0
        if window is not None:
            allowed &= dist < window
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v64)


def _setup(seqs, num_heads, num_kv_heads, dtype, block_size=16, seed=0):
    batch = ref.make_batch(seqs, block_size, seed=seed)
    histories = [(q * Q_GAIN, k, v) for q, k, v in ref.make_qkv(
        batch, num_heads, num_kv_heads, HEAD, dtype, "cpu", seed=seed)]
    kv_cache = ref.empty_kv_cache(batch.num_blocks, block_size, num_kv_heads,
                                  HEAD, dtype, "cpu").fill_(float("nan"))
    key_cache, value_cache = ref.split_kv_cache(kv_cache, num_kv_heads, HEAD)
    if any(s.context for s in batch.seqs):
        ck, cv = ref.context_kv(batch, histories)
        ref.write_kv_torch(ck, cv, key_cache, value_cache,
                           ref.context_slot_mapping(batch, "cpu"))
    return batch, histories, kv_cache


def _impl(num_heads, num_kv_heads, sliding_window, cap=CAP):
    from vllm.attention.backends.abstract import AttentionType
    return backend().TorchSDPACudaImpl(num_heads,
                                       HEAD,
                                       SCALE,
                                       num_kv_heads,
                                       alibi_slopes=None,
                                       sliding_window=sliding_window,
                                       kv_cache_dtype="auto",
                                       logits_soft_cap=cap,
                                       attn_type=AttentionType.DECODER)


def _forward(impl, batch, histories, kv_cache):
    q, k, v = ref.step_inputs(batch, histories)
    meta = backend().TorchSDPACudaMetadata(
        **ref.batch_metadata_fields(batch, "cpu"))
    out = impl.forward(Layer(), q.flatten(1), k.flatten(1), v.flatten(1),
                       kv_cache, meta)
    return out.view_as(q)


def _expected(batch, histories, cap, window):
    return [
        dense(q[s.context:], k, v, SCALE, cap, window)
        for s, (q, k, v) in zip(batch.seqs, histories)
    ]


def _errors(out, expected, batch):
    errs, start = [], 0
    for s, exp in zip(batch.seqs, expected):
        got = out[start:start + s.query]
        start += s.query
        assert torch.isfinite(got).all(), f"{s}: non-finite output"
        errs.append((got.double() - exp).abs().max().item())
    return errs


def D(total):
    return ref.Seq(total - 1, 1, decode=True)


# Plain prefill, cached prefix / chunked prefill (one at twice the window),
# decodes below, at and past twice the window.
SEQS = [ref.Seq(0, 40), ref.Seq(2 * WINDOW, 9), ref.Seq(17, 1), D(1),
        D(WINDOW + 1), D(2 * WINDOW), D(3 * WINDOW + 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [None, WINDOW], ids=["global", "local"])
@pytest.mark.parametrize("num_heads,num_kv_heads", [
    pytest.param(4, 4, id="mha"),
    pytest.param(8, 2, id="gqa4"),
])
def test_softcap_prefill_and_decode(engine, kernel_calls, dtype, window,
                                    num_heads, num_kv_heads):
    """Gemma 2's two kinds of layer (global; local with a window), both
    soft-capped, in a mixed step of prefills and decodes."""
    batch, histories, kv_cache = _setup(SEQS, num_heads, num_kv_heads, dtype)
    out = _forward(_impl(num_heads, num_kv_heads, window), batch, histories,
                   kv_cache)
    errs = _errors(out, _expected(batch, histories, CAP, window), batch)
    assert max(errs) <= ATOL[dtype], list(zip(SEQS, errs))
    assert kernel_calls == []


def test_reference_tells_capped_from_uncapped(engine, kernel_calls):
    """Uncapped attention is far from capped attention here, in prefill
    and in decode: the check above can see the defect."""
    batch, histories, kv_cache = _setup(SEQS, 8, 2, torch.float32)
    capped = _expected(batch, histories, CAP, WINDOW)
    uncapped = _expected(batch, histories, None, WINDOW)
    for s, a, b in zip(SEQS, capped, uncapped):
        if s.total > 1:
            assert (a - b).abs().max() > 0.05, s
    out = _forward(_impl(8, 2, WINDOW), batch, histories, kv_cache)
    assert max(_errors(out, capped, batch)) <= ATOL[torch.float32]


def test_prefill_chunks_queries_and_keeps_sdpa_for_other_layers(
        engine, kernel_calls, monkeypatch):
    """A score budget of a few queries gives the same result (the chunks
    and their key ranges are right); SDPA is not called for soft-capped
    layers and still is for the others."""
    mod = backend()
    sdpa_calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        sdpa_calls.append(1)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(mod.F, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(mod, "_PREFILL_SCORE_ELEMENTS", 8 * 3 * 100)
    seqs = [ref.Seq(0, 70), ref.Seq(3 * WINDOW + 3, 20)]
    batch, histories, kv_cache = _setup(seqs, 8, 2, torch.float32)
    for window in (None, WINDOW):
        out = _forward(_impl(8, 2, window), batch, histories, kv_cache)
        errs = _errors(out, _expected(batch, histories, CAP, window), batch)
        assert max(errs) <= ATOL[torch.float32], (window, errs)
    assert sdpa_calls == []
    # The other layers: per-sequence SDPA, or, on a tree with the
    # one-launch prefill, one varlen launch per member of the GQA group.
    varlen_launches = use_reference_varlen(monkeypatch)
    _forward(_impl(8, 2, None, cap=None), batch, histories, kv_cache)
    if importlib.util.find_spec("vllm.attention.ops.mem_efficient_varlen"):
        assert sdpa_calls == [] and len(varlen_launches) == 8 // 2
    else:
        assert len(sdpa_calls) == 2


def test_decode_route_soft_caps_with_alibi_and_cross_attention(
        engine, kernel_calls):
    """forward_decode_torch caps before the ALiBi bias and the mask; an
    encoder/decoder cross-attention layer with a cap decodes over all
    encoder keys through it too."""
    from vllm.attention.backends.abstract import AttentionType
    mod = backend()
    gen = torch.Generator().manual_seed(5)
    enc_lens = [10, 23]
    k = torch.randn(sum(enc_lens), 4, HEAD, generator=gen)
    v = torch.randn(sum(enc_lens), 4, HEAD, generator=gen)
    kv_cache = ref.empty_kv_cache(4, 16, 4, HEAD, torch.float32,
                                  "cpu").fill_(float("nan"))
    key_cache, value_cache = ref.split_kv_cache(kv_cache, 4, HEAD)
    tables = torch.tensor([[2, 0], [1, 3]], dtype=torch.int32)
    slots = [2 * 16 + i for i in range(10)] + [16 + i for i in range(16)] + [
        3 * 16 + i for i in range(7)
    ]
    ref.write_kv_torch(k, v, key_cache, value_cache, torch.tensor(slots))
    q = torch.randn(2, 4, HEAD, generator=gen) * Q_GAIN
    slopes = ref.alibi_slopes(4)
    out = mod.forward_decode_torch(q, key_cache, value_cache, tables,
                                   torch.tensor(enc_lens), 23, SCALE,
                                   alibi_slopes=slopes, chunk_tokens=7,
                                   logits_soft_cap=CAP)
    starts = [0, 10]
    for i, n in enumerate(enc_lens):
        exp = dense(q[i:i + 1], k[starts[i]:starts[i] + n],
                    v[starts[i]:starts[i] + n], SCALE, CAP, alibi=slopes)
        assert (out[i:i + 1].double() - exp).abs().max() <= 2e-5

    impl = backend().TorchSDPACudaImpl(
        4, HEAD, SCALE, 4, alibi_slopes=None, sliding_window=None,
        kv_cache_dtype="auto", logits_soft_cap=CAP,
        attn_type=AttentionType.ENCODER_DECODER)
    meta = backend().TorchSDPACudaMetadata(
        num_prefills=0,
        num_prefill_tokens=0,
        num_decode_tokens=2,
        slot_mapping=torch.tensor([-1, -1]),
        multi_modal_placeholder_index_maps=None,
        enable_kv_scales_calculation=True,
        seq_lens=[4, 7],
        seq_lens_tensor=torch.tensor([4, 7]),
        max_prefill_seq_len=0,
        max_decode_seq_len=7,
        block_tables=torch.tensor([[0], [0]], dtype=torch.int32),
        use_cuda_graph=False,
        encoder_seq_lens=enc_lens,
        encoder_seq_lens_tensor=torch.tensor(enc_lens),
        max_encoder_seq_len=max(enc_lens),
        num_encoder_tokens=0,
        cross_slot_mapping=torch.empty(0, dtype=torch.long),
        cross_block_tables=tables)
    cross = impl.forward(Layer(), q.flatten(1), None, None, kv_cache,
                         meta).view_as(q)
    assert kernel_calls == []
    for i, n in enumerate(enc_lens):
        exp = dense(q[i:i + 1], k[starts[i]:starts[i] + n],
                    v[starts[i]:starts[i] + n], SCALE, CAP, causal=False)
        assert (cross[i:i + 1].double() - exp).abs().max() <= 2e-5


def test_no_soft_cap_warning(engine):
    """The 'does not support logits soft cap' warning is gone."""
    import logging

    import vllm.logger
    records = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    log = logging.getLogger(backend().__name__)
    log.addHandler(handler)
    vllm.logger._print_warning_once.cache_clear()
    try:
        _impl(8, 2, None)
    finally:
        log.removeHandler(handler)
        vllm.logger._print_warning_once.cache_clear()
    assert not [r for r in records if "soft cap" in r.getMessage()]
