"""TORCH_SDPA attention backend for CUDA (V0): numerics and plumbing on CPU.

Patch: "attention: add a TORCH_SDPA backend for CUDA GPUs" (Tier: critical).

The new module vllm/attention/backends/torch_sdpa_cuda.py prefills with
torch SDPA and decodes through the CUDA PagedAttention ops, never through
a Triton kernel. Its prefill function is plain torch, so it is checked here
on CPU tensors against a float64 reference: plain prefill, a cached prefix
read from a shuffled paged cache under a lower-right causal mask, GQA/MQA,
sliding window, ALiBi, fp32 and fp16, an fp8 cache. The decode op is
CUDA-only: here it is replaced by a torch stand-in to check the plumbing of
the whole forward (metadata split, cache writes, decode arguments); its
numerics are checked on a GPU by tests/kernels/test_sdpa_paged_gpu.py.
"""
import sys

import pytest
import torch

from .paged_reference import Layer, backend, ref, use_reference_varlen  # noqa: E402

# fp16 on CPU: SDPA's math kernel upcasts internally; the inputs and output
# are rounded to fp16 (relative step 2**-11 ~ 4.9e-4). Outputs are convex
# combinations of values of magnitude <= ~4, so a few fp16 ulps of that
# magnitude bound the error: 1e-2 leaves room, and a masking or gathering
# mistake gives errors of order 1.
ATOL = {torch.float32: 2e-5, torch.float16: 1e-2}


def _assert_close(out, expected, dtype, what):
    err = (out.double() - expected).abs().max().item()
    assert err <= ATOL[dtype], f"{what}: max abs error {err:.3g}"


def _run_prefill(batch, num_heads, num_kv_heads, head_size, dtype, *,
                 alibi=None, kv_cache_dtype="auto"):
    """Fill the cache with each sequence's context, run the backend's
    prefill function on the new tokens, compare with the reference."""
    mod = backend()
    histories = ref.make_qkv(batch, num_heads, num_kv_heads, head_size,
                             dtype, "cpu")
    scale = head_size**-0.5
    cache_dtype = torch.uint8 if kv_cache_dtype != "auto" else dtype
    kv_cache = ref.empty_kv_cache(batch.num_blocks, batch.block_size,
                                  num_kv_heads, head_size, dtype,
                                  "cpu").to(cache_dtype)
    key_cache, value_cache = ref.split_kv_cache(kv_cache, num_kv_heads,
                                                head_size)
    k_scale = torch.tensor(0.5)
    v_scale = torch.tensor(0.25)
    if any(s.context for s in batch.seqs):
        ck, cv = ref.context_kv(batch, histories)
        slots = ref.context_slot_mapping(batch, "cpu")
        if kv_cache_dtype != "auto":
            # fp8 bytes of value / scale, as reshape_and_cache stores them.
            ck = (ck.float() / k_scale).to(torch.float8_e4m3fn).view(
                torch.uint8)
            cv = (cv.float() / v_scale).to(torch.float8_e4m3fn).view(
                torch.uint8)
            # The reference sees the values the cache can hold.
            histories = _fp8_rounded_history(batch, histories, k_scale,
                                             v_scale)
        ref.write_kv_torch(ck, cv, key_cache, value_cache, slots)
    q, k, v = ref.step_inputs(batch, histories)
    fields = ref.batch_metadata_fields(batch, "cpu")
    out = torch.full_like(q, float("nan"))
    mod.forward_prefill_sdpa(
        out,
        q,
        k,
        v,
        q_lens=[s.query for s in batch.seqs],
        kv_lens=[s.query for s in batch.seqs],
        scale=scale,
        causal=True,
        context_lens=[s.context for s in batch.seqs],
        sliding_window=batch.sliding_window,
        alibi_slopes=alibi,
        key_cache=key_cache,
        value_cache=value_cache,
        block_tables=fields["block_tables"],
        kv_cache_dtype=kv_cache_dtype,
        k_scale=k_scale,
        v_scale=v_scale,
    )
    expected = torch.cat(
        ref.reference_outputs(batch, histories, scale, alibi=alibi))
    return out, expected


def _fp8_rounded_history(batch, histories, k_scale, v_scale):
    rounded = []
    for s, (q, k, v) in zip(batch.seqs, histories):
        k, v = k.clone(), v.clone()
        k[:s.context] = ((k[:s.context].float() / k_scale).to(
            torch.float8_e4m3fn).float() * k_scale).to(k.dtype)
        v[:s.context] = ((v[:s.context].float() / v_scale).to(
            torch.float8_e4m3fn).float() * v_scale).to(v.dtype)
        rounded.append((q, k, v))
    return rounded


HEADS = [
    pytest.param(4, 4, id="mha"),
    pytest.param(8, 2, id="gqa4"),
    pytest.param(8, 1, id="mqa"),
]
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_heads,num_kv_heads", HEADS)
@pytest.mark.parametrize("head_size", [64, 80])
def test_plain_prefill_matches_reference(dtype, num_heads, num_kv_heads,
                                         head_size):
    batch = ref.make_batch(
        [ref.Seq(0, 1), ref.Seq(0, 17), ref.Seq(0, 40)], block_size=16)
    out, expected = _run_prefill(batch, num_heads, num_kv_heads, head_size,
                                 dtype)
    _assert_close(out, expected, dtype, "plain prefill")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_heads,num_kv_heads", HEADS)
def test_cached_prefix_uses_lower_right_mask(dtype, num_heads, num_kv_heads):
    """Prefix caching / chunked prefill: queries at the end of a longer
    sequence, context read back from shuffled paged blocks."""
    batch = ref.make_batch(
        [
            ref.Seq(16, 5),  # block-aligned prefix
            ref.Seq(33, 31),  # prefix ending mid-block
            ref.Seq(63, 1),  # full prefix hit: only the last token
            ref.Seq(0, 9),  # no prefix in the same batch
        ],
        block_size=16)
    out, expected = _run_prefill(batch, num_heads, num_kv_heads, 64, dtype)
    _assert_close(out, expected, dtype, "prefix prefill")


def test_cached_prefix_differs_from_top_left_mask():
    """The check above would not notice a top-left mask if the reference
    agreed with it: make sure it does not."""
    batch = ref.make_batch([ref.Seq(20, 6)], block_size=16)
    histories = ref.make_qkv(batch, 2, 2, 64, torch.float32, "cpu")
    q, k, v = histories[0]
    top_left = torch.nn.functional.scaled_dot_product_attention(
        q[20:].transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
        is_causal=True).transpose(0, 1)
    out, expected = _run_prefill(batch, 2, 2, 64, torch.float32)
    assert (top_left.double() - expected).abs().max() > 0.1
    _assert_close(out, expected, torch.float32, "prefix prefill")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seqs", [
    pytest.param([ref.Seq(0, 40), ref.Seq(0, 7)], id="no-context"),
    pytest.param([ref.Seq(30, 12), ref.Seq(5, 20), ref.Seq(0, 33)],
                 id="context"),
])
def test_sliding_window(dtype, seqs):
    batch = ref.make_batch(seqs, block_size=16, sliding_window=8)
    out, expected = _run_prefill(batch, 8, 2, 64, dtype)
    _assert_close(out, expected, dtype, "sliding-window prefill")


@pytest.mark.parametrize("dtype", DTYPES)
def test_alibi(dtype):
    batch = ref.make_batch([ref.Seq(0, 21), ref.Seq(18, 7)], block_size=8)
    out, expected = _run_prefill(batch,
                                 8,
                                 8,
                                 64,
                                 dtype,
                                 alibi=ref.alibi_slopes(8))
    _assert_close(out, expected, dtype, "ALiBi prefill")


def test_fp8_cache_is_scaled_back():
    batch = ref.make_batch([ref.Seq(24, 8)], block_size=16)
    out, expected = _run_prefill(batch,
                                 4,
                                 2,
                                 64,
                                 torch.float32,
                                 kv_cache_dtype="fp8")
    _assert_close(out, expected, torch.float32, "fp8-cache prefill")


def test_uses_sdpa_is_causal_only_without_context(monkeypatch):
    """SDPA's is_causal is upper-left aligned: it may only be used when
    query and key lengths agree."""
    mod = backend()
    calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((q.shape[2], k.shape[2], is_causal, attn_mask
                      is not None))
        return real_sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                         **kw)

    monkeypatch.setattr(mod.F, "scaled_dot_product_attention", spy)
    batch = ref.make_batch([ref.Seq(0, 12), ref.Seq(9, 4)], block_size=4)
    out, expected = _run_prefill(batch, 2, 2, 64, torch.float32)
    _assert_close(out, expected, torch.float32, "prefill")
    assert calls == [(12, 12, True, False), (4, 13, False, True)]


# --- the whole forward: metadata, cache writes, decode plumbing -------------


@pytest.fixture
def torch_paged_ops(monkeypatch):
    """Replace the CUDA-only PagedAttention ops by torch stand-ins, record
    the decode calls, and make any Triton prefill path fail loudly."""
    from vllm.attention.ops import paged_attn
    decode_calls = []

    def write_to_paged_cache(key, value, key_cache, value_cache,
                             slot_mapping, kv_cache_dtype, k_scale, v_scale):
        ref.write_kv_torch(key, value, key_cache, value_cache,
                           slot_mapping.flatten())

    def forward_decode(query, key_cache, value_cache, block_tables, seq_lens,
                       max_seq_len, kv_cache_dtype, num_kv_heads, scale,
                       alibi_slopes, k_scale, v_scale, *args, **kwargs):
        decode_calls.append(
            dict(n=query.shape[0],
                 seq_lens=seq_lens.tolist(),
                 max_seq_len=max_seq_len,
                 block_tables=block_tables.clone(),
                 kv_cache_dtype=kv_cache_dtype,
                 num_kv_heads=num_kv_heads,
                 scale=scale))
        return ref.paged_decode_torch(query, key_cache, value_cache,
                                      block_tables, seq_lens, scale,
                                      num_kv_heads, alibi_slopes)

    def triton_path(*args, **kwargs):
        raise AssertionError("a Triton attention kernel was reached")

    monkeypatch.setattr(paged_attn.PagedAttention, "write_to_paged_cache",
                        staticmethod(write_to_paged_cache))
    monkeypatch.setattr(paged_attn.PagedAttention, "forward_decode",
                        staticmethod(forward_decode))
    monkeypatch.setattr(paged_attn.PagedAttention, "forward_prefix",
                        staticmethod(triton_path))
    monkeypatch.setattr(paged_attn, "context_attention_fwd", triton_path,
                        raising=False)
    use_reference_varlen(monkeypatch)
    return decode_calls


def _impl(mod, num_heads, num_kv_heads, head_size, sliding_window=None,
          attn_type=None):
    from vllm.attention.backends.abstract import AttentionType
    return mod.TorchSDPACudaImpl(num_heads,
                                 head_size,
                                 head_size**-0.5,
                                 num_kv_heads,
                                 alibi_slopes=None,
                                 sliding_window=sliding_window,
                                 kv_cache_dtype="auto",
                                 attn_type=attn_type
                                 or AttentionType.DECODER)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sliding_window", [None, 16])
def test_forward_mixed_prefill_and_decode(torch_paged_ops, dtype,
                                          sliding_window):
    mod = backend()
    num_heads, num_kv_heads, head_size = 8, 2, 64
    batch = ref.make_batch(
        [
            ref.Seq(32, 10),  # chunked prefill / prefix hit
            ref.Seq(0, 17),
            ref.Seq(40, 1, decode=True),
            ref.Seq(15, 1, decode=True),
            ref.Seq(16, 1, decode=True),
        ],
        block_size=16,
        sliding_window=sliding_window)
    histories = ref.make_qkv(batch, num_heads, num_kv_heads, head_size,
                             dtype, "cpu")
    kv_cache = ref.empty_kv_cache(batch.num_blocks, batch.block_size,
                                  num_kv_heads, head_size, dtype, "cpu")
    key_cache, value_cache = ref.split_kv_cache(kv_cache, num_kv_heads,
                                                head_size)
    ck, cv = ref.context_kv(batch, histories)
    ref.write_kv_torch(ck, cv, key_cache, value_cache,
                       ref.context_slot_mapping(batch, "cpu"))
    q, k, v = ref.step_inputs(batch, histories)
    meta = mod.TorchSDPACudaMetadata(
        **ref.batch_metadata_fields(batch, "cpu"))
    impl = _impl(mod, num_heads, num_kv_heads, head_size, sliding_window)

    out = impl.forward(Layer(), q.flatten(1), k.flatten(1), v.flatten(1),
                       kv_cache, meta)

    expected = torch.cat(
        ref.reference_outputs(batch, histories, head_size**-0.5))
    _assert_close(out.view_as(q), expected, dtype, "forward")
    # The step's new keys/values were written where the engine put them:
    # the cache now holds every sequence's whole history.
    whole = ref.Batch([ref.Seq(s.total, 0) for s in batch.seqs],
                      batch.block_size, batch.block_tables, batch.num_blocks)
    want_k, want_v = ref.context_kv(whole, histories)
    slots = ref.context_slot_mapping(whole, "cpu")
    blocks, offsets = slots // batch.block_size, slots % batch.block_size
    got_v = value_cache[blocks, :, :, offsets]
    got_k = key_cache[blocks, :, :, offsets, :].reshape(
        len(slots), num_kv_heads, head_size)
    assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
    # One decode call, on the decode tokens, with the decode seq lens.
    (call, ) = torch_paged_ops
    assert call["n"] == 3
    assert call["seq_lens"] == [batch.decode_view(i)[0] for i in (2, 3, 4)]
    assert call["num_kv_heads"] == num_kv_heads
    assert call["scale"] == pytest.approx(head_size**-0.5)


def test_forward_prefill_only_needs_no_block_table(torch_paged_ops):
    """Without prefix caching or chunked prefill the block tables are empty
    (and on the profile run the cache is too)."""
    mod = backend()
    batch = ref.make_batch([ref.Seq(0, 7), ref.Seq(0, 30)], block_size=16)
    histories = ref.make_qkv(batch, 4, 4, 64, torch.float32, "cpu")
    q, k, v = ref.step_inputs(batch, histories)
    meta = mod.TorchSDPACudaMetadata(
        **ref.batch_metadata_fields(batch, "cpu"))
    assert meta.block_tables.numel() == 0
    impl = _impl(mod, 4, 4, 64)
    out = impl.forward(Layer(), q.flatten(1), k.flatten(1), v.flatten(1),
                       torch.empty(0), meta)
    expected = torch.cat(ref.reference_outputs(batch, histories, 64**-0.5))
    _assert_close(out.view_as(q), expected, torch.float32, "profile prefill")
    assert torch_paged_ops == []


@pytest.mark.parametrize("kind", ["ENCODER", "ENCODER_ONLY", "DECODER"])
def test_forward_bidirectional_and_cross_attention(torch_paged_ops, kind):
    """Encoder (and encoder-only) self-attention is not causal;
    encoder/decoder cross-attention is checked below."""
    from vllm.attention.backends.abstract import AttentionType
    mod = backend()
    lens = [5, 12]
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(sum(lens), 4, 64, generator=gen)
    k = torch.randn(sum(lens), 4, 64, generator=gen)
    v = torch.randn(sum(lens), 4, 64, generator=gen)
    fields = dict(num_prefills=2,
                  num_prefill_tokens=sum(lens),
                  num_decode_tokens=0,
                  slot_mapping=torch.full((sum(lens), ), -1),
                  multi_modal_placeholder_index_maps={},
                  enable_kv_scales_calculation=True,
                  seq_lens=lens,
                  seq_lens_tensor=torch.tensor(lens),
                  max_prefill_seq_len=max(lens),
                  max_decode_seq_len=0,
                  max_query_len=max(lens),
                  query_start_loc=torch.tensor([0, 5, 17]),
                  block_tables=torch.empty(2, 0, dtype=torch.int32),
                  use_cuda_graph=False)
    if kind == "ENCODER":
        fields.update(encoder_seq_lens=lens,
                      encoder_seq_lens_tensor=torch.tensor(lens),
                      max_encoder_seq_len=max(lens),
                      num_encoder_tokens=sum(lens))
    meta = mod.TorchSDPACudaMetadata(**fields)
    impl = _impl(mod, 4, 4, 64, attn_type=getattr(AttentionType, kind))
    out = impl.forward(Layer(), q.flatten(1), k.flatten(1), v.flatten(1),
                       torch.empty(0), meta).view_as(q)
    causal = kind == "DECODER"
    start = 0
    for n in lens:
        expected = ref.naive_attention(q[start:start + n],
                                       k[start:start + n],
                                       v[start:start + n],
                                       64**-0.5,
                                       causal=causal)
        _assert_close(out[start:start + n], expected, torch.float32, kind)
        start += n


def test_forward_encoder_decoder_cross_attention(torch_paged_ops):
    from vllm.attention.backends.abstract import AttentionType
    mod = backend()
    dec_lens, enc_lens = [3, 6], [10, 4]
    block_size, heads, d = 16, 4, 64
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(sum(dec_lens), heads, d, generator=gen)
    k = torch.randn(sum(enc_lens), heads, d, generator=gen)
    v = torch.randn(sum(enc_lens), heads, d, generator=gen)
    kv_cache = ref.empty_kv_cache(4, block_size, heads, d, torch.float32,
                                  "cpu")
    cross_tables = torch.tensor([[2], [0]], dtype=torch.int32)
    cross_slots = torch.tensor([2 * 16 + i for i in range(10)] +
                               [0 * 16 + i for i in range(4)])
    meta = mod.TorchSDPACudaMetadata(
        num_prefills=2,
        num_prefill_tokens=sum(dec_lens),
        num_decode_tokens=0,
        slot_mapping=torch.full((sum(dec_lens), ), -1),
        multi_modal_placeholder_index_maps={},
        enable_kv_scales_calculation=True,
        seq_lens=dec_lens,
        seq_lens_tensor=torch.tensor(dec_lens),
        max_prefill_seq_len=max(dec_lens),
        max_decode_seq_len=0,
        max_query_len=max(dec_lens),
        query_start_loc=torch.tensor([0, 3, 9]),
        block_tables=torch.empty(2, 0, dtype=torch.int32),
        use_cuda_graph=False,
        encoder_seq_lens=enc_lens,
        encoder_seq_lens_tensor=torch.tensor(enc_lens),
        max_encoder_seq_len=max(enc_lens),
        num_encoder_tokens=sum(enc_lens),
        cross_slot_mapping=cross_slots,
        cross_block_tables=cross_tables)
    impl = _impl(mod, heads, heads, d, attn_type=AttentionType.ENCODER_DECODER)
    out = impl.forward(Layer(), q.flatten(1), k.flatten(1), v.flatten(1),
                       kv_cache, meta).view_as(q)
    qs = ks = 0
    for nq, nk in zip(dec_lens, enc_lens):
        expected = ref.naive_attention(q[qs:qs + nq],
                                       k[ks:ks + nk],
                                       v[ks:ks + nk],
                                       d**-0.5,
                                       causal=False)
        _assert_close(out[qs:qs + nq], expected, torch.float32, "cross")
        qs, ks = qs + nq, ks + nk

    # Decode step: one new decoder token per sequence reads the encoder
    # K/V from the cross blocks written above.
    q1 = torch.randn(2, heads, d, generator=gen)
    meta = mod.TorchSDPACudaMetadata(
        num_prefills=0,
        num_prefill_tokens=0,
        num_decode_tokens=2,
        slot_mapping=torch.tensor([-1, -1]),
        multi_modal_placeholder_index_maps={},
        enable_kv_scales_calculation=True,
        seq_lens=[4, 7],
        seq_lens_tensor=torch.tensor([4, 7]),
        max_prefill_seq_len=0,
        max_decode_seq_len=7,
        block_tables=torch.tensor([[1], [3]], dtype=torch.int32),
        use_cuda_graph=False,
        encoder_seq_lens=enc_lens,
        encoder_seq_lens_tensor=torch.tensor(enc_lens),
        max_encoder_seq_len=max(enc_lens),
        num_encoder_tokens=0,
        cross_slot_mapping=torch.empty(0, dtype=torch.long),
        cross_block_tables=cross_tables)
    out1 = impl.forward(Layer(), q1.flatten(1), None, None, kv_cache,
                        meta).view_as(q1)
    (call, ) = torch_paged_ops
    assert call["seq_lens"] == enc_lens
    assert torch.equal(call["block_tables"], cross_tables)
    ks = 0
    for i, nk in enumerate(enc_lens):
        expected = ref.naive_attention(q1[i:i + 1],
                                       k[ks:ks + nk],
                                       v[ks:ks + nk],
                                       d**-0.5,
                                       causal=False)
        _assert_close(out1[i:i + 1], expected, torch.float32, "cross decode")
        ks += nk


# --- interface: builder, CUDA graph state, vision encoders ------------------


def test_backend_interface():
    mod = backend()
    from vllm.attention.backends.utils import (CommonAttentionState,
                                               CommonMetadataBuilder)
    from vllm.attention.ops.paged_attn import PagedAttention
    b = mod.TorchSDPACudaBackend
    assert b.get_name() == "TORCH_SDPA"
    assert issubclass(b.get_builder_cls(), CommonMetadataBuilder)
    assert b.get_state_cls() is CommonAttentionState
    assert b.get_kv_cache_shape(10, 16, 2,
                                128) == PagedAttention.get_kv_cache_shape(
                                    10, 16, 2, 128)
    for size in (64, 80, 96, 128, 256):
        assert size in b.get_supported_head_sizes()
    with pytest.raises(ValueError, match="Head size"):
        _impl(mod, 4, 4, 72)


def test_cuda_graph_state_builds_decode_metadata(torch_paged_ops):
    """CommonAttentionState fills the metadata for graph capture and
    replay with the same keyword arguments as for XFormers."""
    import numpy as np

    from vllm.attention.backends.utils import CommonAttentionState
    mod = backend()

    class Runner:
        attn_backend = mod.TorchSDPACudaBackend
        device = "cpu"
        max_seq_len_to_capture = 64
        graph_block_tables = np.zeros((8, 4), dtype=np.int32)

    state = CommonAttentionState(Runner())
    with state.graph_capture(max_batch_size=8):
        clone = state.graph_clone(4)
        meta = state.graph_capture_get_metadata_for_batch(4)
        assert isinstance(meta, mod.TorchSDPACudaMetadata)
        assert meta.prefill_metadata is None
        decode = meta.decode_metadata
        assert decode.use_cuda_graph and decode.num_decode_tokens == 4
        buffers = state.get_graph_input_buffers(meta)
        replay = mod.TorchSDPACudaMetadata(**{
            **meta.asdict_zerocopy({"_cached_prefill_metadata",
                                    "_cached_decode_metadata"}),
            "seq_lens_tensor":
            torch.tensor([5, 6, 7, 8], dtype=torch.int32),
            "block_tables":
            torch.arange(16, dtype=torch.int32).view(4, 4),
        })
        state.prepare_graph_input_buffers(buffers, replay)
        assert buffers["seq_lens_tensor"].tolist() == [5, 6, 7, 8]
        assert isinstance(clone, CommonAttentionState)


def test_vision_multihead_attention_takes_torch_sdpa(monkeypatch):
    """ViT encoders (MultiHeadAttention) map the selected backend by name:
    TORCH_SDPA makes them use torch SDPA, which works on SM 7.0."""
    mod = backend()
    import vllm.attention.layer as layer
    from vllm.platforms import _Backend
    monkeypatch.setattr(layer, "get_attn_backend",
                        lambda *a, **k: mod.TorchSDPACudaBackend)
    monkeypatch.setattr(layer.current_platform, "is_rocm", lambda: False)
    mha = layer.MultiHeadAttention(num_heads=4, head_size=64, scale=0.125)
    assert mha.attn_backend == _Backend.TORCH_SDPA
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 9, 4 * 64, generator=gen) for _ in range(3))
    out = mha(q, k, v).view(2, 9, 4, 64)
    for b in range(2):
        expected = ref.naive_attention(q[b].view(9, 4, 64),
                                       k[b].view(9, 4, 64),
                                       v[b].view(9, 4, 64),
                                       0.125,
                                       causal=False)
        _assert_close(out[b], expected, torch.float32, "vision MHA")


def test_mamba2_hybrids_see_chunked_prefill_state(monkeypatch):
    """Mamba2 hybrid models read the prefills' context lengths only from
    metadata classes they know; the new backend's must be among them."""
    import types

    mod = backend()
    from vllm.model_executor.layers.mamba import mamba2_metadata
    for name, cls in (("flash_attn", "FlashAttentionMetadata"),
                      ("xformers", "XFormersMetadata")):
        fake = types.ModuleType(f"vllm.attention.backends.{name}")
        setattr(fake, cls, type(cls, (), {}))
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.setattr(mamba2_metadata.current_platform, "is_rocm",
                        lambda: False)
    monkeypatch.setattr(mamba2_metadata.current_platform, "is_cuda",
                        lambda: True)
    batch = ref.make_batch([ref.Seq(8, 4), ref.Seq(0, 5)], block_size=4)
    meta = mod.TorchSDPACudaMetadata(
        **ref.batch_metadata_fields(batch, "cpu"))
    assert mod.TorchSDPACudaMetadata in (
        mamba2_metadata.get_platform_metadata_classes())
    state = mamba2_metadata.prepare_mamba2_metadata(chunk_size=4,
                                                    attn_metadata=meta)
    assert state.has_initial_states.tolist() == [True, False]
