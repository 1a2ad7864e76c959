"""TORCH_SDPA prefill in one memory-efficient varlen launch per layer.

Patch: "attention: prefill TORCH_SDPA in one varlen launch, context in
bounded chunks" (Tier: critical).

The kernel (torch.ops.aten._efficient_attention_forward) is CUDA-only; here
its torch stand-in (tests/kernels/sdpa_reference.efficient_attention_torch,
which follows the conventions measured on a GPU) records each launch, so the
plan and the plumbing are checked on CPU against the float64 reference: one
launch per layer (per member of a GQA group), cached context gathered in
bounded chunks and merged by log-sum-exp, the plan made once per step from
host lengths, and the per-sequence route kept only for ALiBi and soft caps.
tests/kernels/test_sdpa_paged_gpu.py runs the real kernel.
"""
import pytest
import torch

from .paged_reference import Layer, backend, ref, use_reference_kernels  # noqa: E402

ATOL = {torch.float32: 2e-5, torch.float16: 1e-2}


@pytest.fixture
def launches(monkeypatch):
    use_reference_kernels(monkeypatch)
    from vllm.attention.ops import mem_efficient_varlen as varlen
    calls = []
    standin = varlen.efficient_attention

    def record(query, key, *args):
        # args: value, cu_q, cu_k, max_q, max_k, mask, scale, window, lse
        calls.append(dict(q=query.shape[1], k=key.shape[1],
                          heads=query.shape[2], mask=args[5],
                          window=args[7]))
        return standin(query, key, *args)

    monkeypatch.setattr(varlen, "efficient_attention", record)
    return calls


def _impl(num_heads, num_kv_heads, head_size, sliding_window=None,
          alibi=None, soft_cap=None):
    return backend().TorchSDPACudaImpl(num_heads,
                                       head_size,
                                       head_size**-0.5,
                                       num_kv_heads,
                                       alibi_slopes=alibi,
                                       sliding_window=sliding_window,
                                       kv_cache_dtype="auto",
                                       logits_soft_cap=soft_cap)


def _forward(seqs, num_heads, num_kv_heads, head_size, dtype,
             sliding_window=None, impl=None, layers=1, host_lens=True):
    """Run the step through impl.forward ``layers`` times on one metadata;
    return (outputs, expected, metadata)."""
    mod = backend()
    batch = ref.make_batch(seqs, block_size=16, sliding_window=sliding_window)
    histories = ref.make_qkv(batch, num_heads, num_kv_heads, head_size,
                             dtype, "cpu")
    kv_cache = ref.empty_kv_cache(batch.num_blocks, batch.block_size,
                                  num_kv_heads, head_size, dtype, "cpu")
    key_cache, value_cache = ref.split_kv_cache(kv_cache, num_kv_heads,
                                                head_size)
    if any(s.context for s in seqs):
        ck, cv = ref.context_kv(batch, histories)
        ref.write_kv_torch(ck, cv, key_cache, value_cache,
                           ref.context_slot_mapping(batch, "cpu"))
    q, k, v = ref.step_inputs(batch, histories)
    fields = ref.batch_metadata_fields(batch, "cpu")
    if host_lens:
        # As TorchSDPACudaMetadataBuilder.build leaves them; no device
        # tensor of query starts is needed then.
        fields["query_lens"] = [s.query for s in seqs]
        fields["query_start_loc"] = None
    meta = mod.TorchSDPACudaMetadata(**fields)
    impl = impl or _impl(num_heads, num_kv_heads, head_size, sliding_window)
    outs = [
        impl.forward(Layer(), q.flatten(1), k.flatten(1), v.flatten(1),
                     kv_cache, meta).view_as(q) for _ in range(layers)
    ]
    expected = torch.cat(
        ref.reference_outputs(batch, histories, head_size**-0.5))
    return outs, expected, meta


def _err(out, expected):
    return (out.double() - expected).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16],
                         ids=["fp32", "fp16"])
@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (8, 2), (8, 1)],
                         ids=["mha", "gqa4", "mqa"])
def test_prefill_is_one_launch_per_layer(launches, dtype, num_heads,
                                         num_kv_heads):
    seqs = [ref.Seq(0, n) for n in (1, 15, 16, 17, 40)]
    (out, ), expected, _ = _forward(seqs, num_heads, num_kv_heads, 64, dtype)
    assert _err(out, expected) <= ATOL[dtype]
    group = num_heads // num_kv_heads
    # One launch over the whole batch; GQA: one per member of a group,
    # each with the KV heads as they are (never repeated).
    want = 1 if num_kv_heads in (1, num_heads) else group
    assert len(launches) == want, launches
    assert all(c["q"] == sum(s.query for s in seqs) for c in launches)
    assert all(c["heads"] == (num_heads if want == 1 else num_kv_heads)
               for c in launches)


def test_long_gqa_prompts_repeat_kv_in_one_launch(launches, monkeypatch):
    """From GQA_REPEAT_MIN_QUERY query tokens on, the step's own K/V are
    repeated to the query heads and the kernel is launched once."""
    from vllm.attention.ops import mem_efficient_varlen as varlen
    monkeypatch.setattr(varlen, "GQA_REPEAT_MIN_QUERY", 40)
    seqs = [ref.Seq(0, 40), ref.Seq(0, 7)]
    (out, ), expected, _ = _forward(seqs, 8, 2, 64, torch.float32)
    assert _err(out, expected) <= ATOL[torch.float32]
    assert [(c["q"], c["heads"]) for c in launches] == [(47, 8)]


def test_plan_is_made_once_per_step(launches, monkeypatch):
    """The plan (lengths, offsets, gather indices) is built at the first
    layer and reused by the others; host lengths, no device read."""
    from vllm.attention.ops import mem_efficient_varlen as varlen
    made = []
    real = varlen.plan_causal
    monkeypatch.setattr(varlen, "plan_causal",
                        lambda *a, **kw: made.append(1) or real(*a, **kw))
    seqs = [ref.Seq(20, 5), ref.Seq(0, 9)]
    outs, expected, meta = _forward(seqs, 4, 4, 64, torch.float32, layers=3)
    assert all(_err(o, expected) <= ATOL[torch.float32] for o in outs)
    assert made == [1]
    # Built from the builder's host lists: query_start_loc was None here.
    assert meta.prefill_metadata.prefill_query_lens() == [5, 9]


def test_cached_context_in_one_bottom_right_launch(launches):
    seqs = [ref.Seq(17, 4), ref.Seq(0, 9), ref.Seq(33, 1)]
    (out, ), expected, _ = _forward(seqs, 4, 4, 64, torch.float32)
    assert _err(out, expected) <= ATOL[torch.float32]
    (call, ) = launches
    assert call["mask"] == 2  # causal from the bottom right
    assert call["k"] == sum(s.total for s in seqs)


def test_window_reads_only_visible_context(launches):
    """With a window only the cached keys some query can see are gathered
    (that bounds a windowed layer's read by the window)."""
    window = 8
    seqs = [ref.Seq(40, 3), ref.Seq(5, 6)]
    (out, ), expected, _ = _forward(seqs, 4, 2, 64, torch.float32,
                                    sliding_window=window)
    assert _err(out, expected) <= ATOL[torch.float32]
    assert {c["window"] for c in launches} == {window}
    # Sequence 0 sees the last window - 1 cached keys, sequence 1 all 5.
    assert {c["k"] for c in launches} == {(window - 1) + 3 + 5 + 6}


def test_long_context_is_read_in_bounded_chunks(launches, monkeypatch):
    """A context longer than the chunk is attended chunk by chunk (every
    query sees all of a chunk) and merged with the causal part over the
    new tokens by log-sum-exp; no launch gathers more than a chunk."""
    from vllm.attention.ops import mem_efficient_varlen as varlen
    head_size, num_kv_heads = 64, 2
    chunk = 32
    monkeypatch.setattr(varlen, "CONTEXT_CHUNK_ELEMENTS",
                        chunk * num_kv_heads * head_size)
    seqs = [ref.Seq(10, 3), ref.Seq(200, 7), ref.Seq(12, 4)]
    (out, ), expected, _ = _forward(seqs, 8, num_kv_heads, head_size,
                                    torch.float32)
    assert _err(out, expected) <= ATOL[torch.float32]
    group = 8 // num_kv_heads
    # GQA: each launch of the plan is made once per member of a group.
    shapes = [(c["q"], c["k"], c["mask"]) for c in launches[0::group]]
    assert len(launches) == group * len(shapes)
    # Sequence 0 alone (sequence 1 does not fit with it), sequence 1's new
    # tokens, its 7 chunks of context (200 = 6 * 32 + 8), then sequence 2.
    assert shapes == ([(3, 13, 2), (7, 7, 1)] + [(7, 32, 0)] * 6 +
                      [(7, 8, 0), (4, 16, 2)]), shapes
    assert all(k - (q if mask else 0) <= chunk for q, k, mask in shapes)


@pytest.mark.parametrize("kind", ["alibi", "soft_cap"])
def test_masks_the_kernel_cannot_express_keep_the_sequence_route(
        launches, kind):
    num_heads = 4
    impl = _impl(num_heads, num_heads, 64,
                 alibi=[0.5, 0.25, 0.125, 0.0625] if kind == "alibi" else None,
                 soft_cap=30.0 if kind == "soft_cap" else None)
    _forward([ref.Seq(0, 9), ref.Seq(6, 3)], num_heads, num_heads, 64,
             torch.float32, impl=impl)
    assert launches == []


def test_builder_keeps_the_host_query_lens(monkeypatch):
    mod = backend()
    from vllm.attention.backends import utils
    made = {}

    def build(self, seq_lens, query_lens, cuda_graph_pad_size, batch_size):
        made["meta"] = mod.TorchSDPACudaMetadata(
            **ref.batch_metadata_fields(
                ref.make_batch([ref.Seq(4, 3), ref.Seq(0, 5)], 16), "cpu"))
        return made["meta"]

    monkeypatch.setattr(utils.CommonMetadataBuilder, "build", build)
    builder = object.__new__(mod.TorchSDPACudaMetadataBuilder)
    meta = builder.build([7, 5], [3, 5], -1, 2)
    assert meta is made["meta"] and meta.query_lens == [3, 5]
    meta.query_start_loc = None  # not read
    assert meta.prefill_metadata.prefill_query_lens() == [3, 5]
