"""TORCH_SDPA (CUDA) decode honours a layer's own sliding window.

Patch: "attention: apply per-layer sliding windows in TORCH_SDPA decode".

For models with interleaved attention (Gemma 2/3, Cohere2) vllm/config.py
drops the model-level window and leaves it to each layer, so the V0 model
runner hands decode the whole block table. PagedAttention.forward_decode
takes no window: without the patch the local layers attend to everything
once the context passes the window. With it, such layers decode through
forward_decode_torch, which reads the window's keys from the paged cache in
fixed-size chunks (online softmax, fp32) with tensor ops of static shape.

Checked on CPU tensors against a dense float64 reference over each
sequence's whole history (full attention matrix, causal + window mask), on
a paged cache filled by hand whose unwritten slots hold NaN.
"""
import math
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .paged_reference import Layer, backend, ref, use_reference_kernels  # noqa: E402

ATOL = {torch.float32: 2e-5, torch.float16: 1e-2}
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
]
HEADS = [
    pytest.param(4, 4, id="mha"),
    pytest.param(8, 2, id="gqa4"),
    pytest.param(8, 1, id="mqa"),
]


@pytest.fixture
def engine(monkeypatch):
    """Impls made under an engine config whose model-level window (the one
    the V0 model runner trims block tables for) is ``engine.window``:
    None for interleaved models such as Gemma 2/3."""
    import vllm.config
    state = types.SimpleNamespace(window=None)
    model_config = types.SimpleNamespace(
        get_sliding_window=lambda: state.window)
    monkeypatch.setattr(vllm.config, "_current_vllm_config",
                        types.SimpleNamespace(model_config=model_config))
    return state


@pytest.fixture
def kernel_calls(monkeypatch):
    """Torch stand-ins for the CUDA-only cache write and decode kernel
    (the stand-in decode computes what paged_attention_v1/v2 compute: all
    seq_lens keys, no window); records the decode calls."""
    return use_reference_kernels(monkeypatch)


def _impl(num_heads, num_kv_heads, head_size, sliding_window):
    from vllm.attention.backends.abstract import AttentionType
    return backend().TorchSDPACudaImpl(num_heads,
                                       head_size,
                                       head_size**-0.5,
                                       num_kv_heads,
                                       alibi_slopes=None,
                                       sliding_window=sliding_window,
                                       kv_cache_dtype="auto",
                                       attn_type=AttentionType.DECODER)


def _setup(seqs, num_heads, num_kv_heads, head_size, dtype, block_size,
           runner_window=None, seed=0):
    """A batch, its histories, and a paged cache holding every context
    (unwritten slots are NaN). ``runner_window`` trims the decode block
    tables as the V0 runner does for a model-level window."""
    batch = ref.make_batch(seqs, block_size, sliding_window=runner_window,
                           seed=seed)
    histories = ref.make_qkv(batch, num_heads, num_kv_heads, head_size,
                             dtype, "cpu", seed=seed)
    kv_cache = ref.empty_kv_cache(batch.num_blocks, block_size, num_kv_heads,
                                  head_size, dtype, "cpu").fill_(float("nan"))
    key_cache, value_cache = ref.split_kv_cache(kv_cache, num_kv_heads,
                                                head_size)
    if any(s.context for s in batch.seqs):
        ck, cv = ref.context_kv(batch, histories)
        ref.write_kv_torch(ck, cv, key_cache, value_cache,
                           ref.context_slot_mapping(batch, "cpu"))
    return batch, histories, kv_cache, key_cache, value_cache


def _direct(seqs, num_heads, num_kv_heads, dtype=torch.float32,
            block_size=16):
    """Inputs of a direct forward_decode_torch call: the cache also holds
    each decode's new token (the impl writes it before decoding)."""
    batch, histories, _, key_cache, value_cache = _setup(
        seqs, num_heads, num_kv_heads, 64, dtype, block_size)
    _, k, v = ref.step_inputs(batch, histories)
    slots = [
        batch.slots(i, s.context, s.total)[0] for i, s in enumerate(seqs)
    ]
    ref.write_kv_torch(k, v, key_cache, value_cache, torch.tensor(slots))
    fields = ref.batch_metadata_fields(batch, "cpu")
    q = torch.stack([q[-1] for q, _, _ in histories])
    return batch, histories, q, key_cache, value_cache, fields


def _forward(impl, batch, histories, kv_cache):
    mod = backend()
    q, k, v = ref.step_inputs(batch, histories)
    meta = mod.TorchSDPACudaMetadata(
        **ref.batch_metadata_fields(batch, "cpu"))
    out = impl.forward(Layer(), q.flatten(1), k.flatten(1), v.flatten(1),
                       kv_cache, meta)
    return out.view_as(q)


def _dense(batch, histories, scale, window):
    """Float64 attention of each step query over its whole history, with a
    causal and sliding-window mask (full attention matrix)."""
    return [
        ref.naive_attention(q[s.context:], k, v, scale, True, window)
        for s, (q, k, v) in zip(batch.seqs, histories)
    ]


def _check(out, expected, batch, dtype, what):
    start = 0
    for s, exp in zip(batch.seqs, expected):
        got = out[start:start + s.query]
        start += s.query
        assert torch.isfinite(got).all(), f"{what} {s}: non-finite output"
        err = (got.double() - exp).abs().max().item()
        assert err <= ATOL[dtype], f"{what} {s}: max abs error {err:.3g}"


def D(total):
    return ref.Seq(total - 1, 1, decode=True)


WINDOW = 32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_heads,num_kv_heads", HEADS)
@pytest.mark.parametrize("block_size", [8, 16])
def test_decode_honours_layer_window(engine, kernel_calls, dtype, num_heads,
                                     num_kv_heads, block_size):
    """Gemma-3-like local layer: decodes shorter than, at, just past and at
    twice (and more) the window, in one batch, the whole block table
    handed over as the runner does for interleaved models."""
    seqs = [D(1), D(WINDOW - 1), D(WINDOW), D(WINDOW + 1), D(2 * WINDOW),
            D(2 * WINDOW + 5), D(5 * WINDOW + 3)]
    batch, histories, kv_cache, _, _ = _setup(seqs, num_heads, num_kv_heads,
                                              64, dtype, block_size)
    impl = _impl(num_heads, num_kv_heads, 64, WINDOW)
    out = _forward(impl, batch, histories, kv_cache)
    _check(out, _dense(batch, histories, 64**-0.5, WINDOW), batch, dtype,
           "windowed decode")
    assert kernel_calls == []


def test_reference_tells_window_from_full_attention(engine, kernel_calls):
    """At twice the window, full attention (what the kernel gives) is far
    from windowed attention: the check above can see the defect."""
    batch, histories, kv_cache, _, _ = _setup([D(2 * WINDOW)], 8, 2, 64,
                                              torch.float32, 16)
    out = _forward(_impl(8, 2, 64, WINDOW), batch, histories, kv_cache)
    windowed = _dense(batch, histories, 64**-0.5, WINDOW)[0]
    full = _dense(batch, histories, 64**-0.5, None)[0]
    assert (windowed - full).abs().max() > 0.1
    assert (out.double() - windowed).abs().max() <= ATOL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_prefill_and_decode_at_twice_the_window(engine, kernel_calls,
                                                      dtype):
    """Chunked prefill with cached context and decodes in one step, then a
    second decode step of the same sequences on the cache the first step
    wrote."""
    seqs = [ref.Seq(2 * WINDOW, 9), ref.Seq(0, 40), D(2 * WINDOW),
            D(3 * WINDOW + 7)]
    batch, histories, kv_cache, _, _ = _setup(seqs, 8, 2, 64, dtype, 16)
    impl = _impl(8, 2, 64, WINDOW)
    out = _forward(impl, batch, histories, kv_cache)
    _check(out, _dense(batch, histories, 64**-0.5, WINDOW), batch, dtype,
           "mixed step")
    assert kernel_calls == []


def test_layers_without_a_layer_window_keep_the_kernel(engine, kernel_calls):
    """Global layers (no window) and model-level windows, which the runner
    applies by trimming the block tables, still call
    PagedAttention.forward_decode; layer-only windows do not."""
    seqs = [D(2 * WINDOW), D(WINDOW + 3)]
    batch, histories, kv_cache, _, _ = _setup(seqs, 4, 4, 64, torch.float32,
                                              16)
    _forward(_impl(4, 4, 64, None), batch, histories, kv_cache)
    assert kernel_calls == [[2 * WINDOW, WINDOW + 3]]

    engine.window = WINDOW  # e.g. Mistral 7B v0.1: the runner trims
    trimmed, histories, kv_cache, _, _ = _setup(seqs, 4, 4, 64,
                                                torch.float32, 16,
                                                runner_window=WINDOW)
    _forward(_impl(4, 4, 64, WINDOW), trimmed, histories, kv_cache)
    assert kernel_calls[1] == [trimmed.decode_view(i)[0] for i in (0, 1)]

    engine.window = None  # Gemma 3: the layer's own window
    _forward(_impl(4, 4, 64, WINDOW), batch, histories, kv_cache)
    assert len(kernel_calls) == 2


@pytest.mark.parametrize("chunk_tokens", [1, 5, 16, 1000])
def test_chunking_does_not_change_the_result(chunk_tokens):
    mod = backend()
    seqs = [D(7), D(2 * WINDOW), D(3 * WINDOW + 1)]
    batch, histories, q, key_cache, value_cache, fields = _direct(seqs, 8, 2)
    out = mod.forward_decode_torch(q,
                                   key_cache,
                                   value_cache,
                                   fields["block_tables"],
                                   fields["seq_lens_tensor"],
                                   fields["max_decode_seq_len"],
                                   64**-0.5,
                                   sliding_window=WINDOW,
                                   chunk_tokens=chunk_tokens)
    expected = torch.cat(_dense(batch, histories, 64**-0.5, WINDOW))
    assert (out.double() - expected).abs().max() <= ATOL[torch.float32]


def test_torch_route_without_window_and_with_alibi_and_fp8():
    """The route's other inputs: no window (all keys), ALiBi slopes (the
    kernel's bias), an fp8 cache scaled back; a padding row of length 0
    gives 0, not NaN."""
    mod = backend()
    seqs = [D(5), D(40), D(77)]
    batch, histories, q, key_cache, value_cache, fields = _direct(seqs, 8, 8)
    slopes = ref.alibi_slopes(8)
    out = mod.forward_decode_torch(q, key_cache, value_cache,
                                   fields["block_tables"],
                                   fields["seq_lens_tensor"], 77, 64**-0.5,
                                   alibi_slopes=slopes)
    expected = torch.cat([
        ref.naive_attention(q[-1:], k, v, 64**-0.5, True, None, slopes)
        for q, k, v in histories
    ])
    assert (out.double() - expected).abs().max() <= ATOL[torch.float32]

    k_scale, v_scale = torch.tensor(0.5), torch.tensor(0.25)
    fp8 = lambda t, s: (t / s).to(torch.float8_e4m3fn).view(torch.uint8)
    out8 = mod.forward_decode_torch(q,
                                    fp8(key_cache, k_scale),
                                    fp8(value_cache, v_scale),
                                    fields["block_tables"],
                                    fields["seq_lens_tensor"],
                                    77,
                                    64**-0.5,
                                    sliding_window=WINDOW,
                                    kv_cache_dtype="fp8",
                                    k_scale=k_scale,
                                    v_scale=v_scale)
    rounded = [
        tuple((t / s).to(torch.float8_e4m3fn).float() * s
              for t, s in ((k, k_scale), (v, v_scale)))
        for _, k, v in histories
    ]
    expected8 = torch.cat([
        ref.naive_attention(q[-1:], k, v, 64**-0.5, True, WINDOW)
        for (q, _, _), (k, v) in zip(histories, rounded)
    ])
    assert (out8.double() - expected8).abs().max() <= 2e-5

    seq_lens = fields["seq_lens_tensor"].clone()
    seq_lens[0] = 0
    padded = mod.forward_decode_torch(q, key_cache, value_cache,
                                      fields["block_tables"], seq_lens, 77,
                                      64**-0.5, sliding_window=WINDOW)
    assert torch.equal(padded[0], torch.zeros_like(padded[0]))


class _Recorder(TorchDispatchMode):
    """Every aten op with the shapes of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        shapes = tuple(
            tuple(a.shape) if isinstance(a, torch.Tensor) else None
            for a in torch.utils._pytree.tree_leaves((args, kwargs)))
        self.ops.append((str(func), shapes))
        return func(*args, **kwargs)


HOST_SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero",
                 "aten.masked_select", "aten.is_nonzero", "aten.item",
                 "aten.unique", "aten.repeat_interleave.Tensor")


def test_decode_route_has_static_shapes_and_no_host_sync():
    """What CUDA graph capture needs: no op that reads device values back
    to the host, and the same ops on the same shapes whatever the values of
    seq_lens and block_tables (for a fixed batch size and max_seq_len)."""
    mod = backend()
    num_blocks, block_size, max_seq_len = 40, 16, 5 * WINDOW
    kv_cache = ref.empty_kv_cache(num_blocks, block_size, 2, 64,
                                  torch.float32, "cpu")
    key_cache, value_cache = ref.split_kv_cache(kv_cache, 2, 64)
    q = torch.randn(4, 8, 64)
    width = math.ceil(max_seq_len / block_size)
    runs = []
    for seed, seq_lens in ((0, [1, 33, 64, 160]), (1, [160, 2, 90, 31])):
        gen = torch.Generator().manual_seed(seed)
        tables = torch.randint(0, num_blocks, (4, width), generator=gen,
                               dtype=torch.int32)
        with _Recorder() as rec:
            mod.forward_decode_torch(q, key_cache, value_cache, tables,
                                     torch.tensor(seq_lens,
                                                  dtype=torch.int32),
                                     max_seq_len, 0.125,
                                     sliding_window=WINDOW,
                                     chunk_tokens=8)
        runs.append(rec.ops)
    names = {name for name, _ in runs[0]}
    assert not [n for n in names if n.startswith(HOST_SYNC_OPS)], names
    assert runs[0] == runs[1]


def test_decode_chunk_is_bounded():
    """Gemma 2 9B shapes (8 kv heads of 256) at 256 sequences: at least
    16 tokens a chunk, at most 2**23 elements per gathered copy."""
    mod = backend()
    for num_seqs in (1, 8, 256, 1024):
        tokens = mod.decode_chunk_tokens(num_seqs, 8, 256)
        assert tokens >= 16
        assert num_seqs * tokens * 8 * 256 <= max(1 << 23,
                                                  num_seqs * 16 * 8 * 256)


_TINY = {
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "torch_dtype": "float32",
}


@pytest.mark.parametrize("arch,model_type,window,extra,in_torch", [
    ("Gemma2ForCausalLM", "gemma2", 4096, {}, True),
    ("Gemma3ForCausalLM", "gemma3_text", 1024, {
        "sliding_window_pattern": 6
    }, True),
    ("Cohere2ForCausalLM", "cohere2", 4096, {
        "sliding_window_pattern": 4
    }, True),
    ("MistralForCausalLM", "mistral", 4096, {}, False),
])
def test_engine_config_decides_the_route(monkeypatch, tmp_path, arch,
                                         model_type, window, extra,
                                         in_torch):
    """With the real ModelConfig of each model kind: interleaved models
    (window left to the layers) take the torch route in their local
    layers, a model-level window (the runner trims) keeps the kernel."""
    import json

    import vllm.config
    import vllm.platforms
    from vllm.model_executor.models import registry

    from .fakes import fake_cuda
    platform = fake_cuda(7, 0, "Tesla V100-SXM2-32GB")
    monkeypatch.setattr(vllm.platforms, "_current_platform", platform)
    monkeypatch.setattr(vllm.config, "current_platform", platform)
    monkeypatch.delenv("VLLM_ATTENTION_BACKEND", raising=False)
    # Inspect the model class in this process (the subprocess takes ~15 s).
    monkeypatch.setattr(registry, "_run_in_subprocess", lambda fn: fn())
    config = dict(_TINY,
                  architectures=[arch],
                  model_type=model_type,
                  sliding_window=window,
                  **extra)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model_config = vllm.config.ModelConfig(model=str(tmp_path),
                                           dtype="float32")
    monkeypatch.setattr(vllm.config, "_current_vllm_config",
                        types.SimpleNamespace(model_config=model_config))
    assert _impl(4, 2, 64, window).decode_in_torch is in_torch
    assert not _impl(4, 2, 64, None).decode_in_torch
