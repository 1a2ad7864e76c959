"""TORCH_SDPA (CUDA) attention backend on a GPU, forced onto the Volta path.

What runs: the tree's vllm (VLLM_VOLTA_TREE, default upstream/) selects its
attention backend as on a V100 (the CUDA platform's capability is mocked to
7.0), and the selected backend's forward runs on real CUDA tensors:

- prefill through torch SDPA restricted to the memory-efficient kernel
  (the one SM 7.0 has: ``sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)``),
  with cached context gathered from a paged KV cache whose physical blocks
  are shuffled and were filled by vLLM's own ``reshape_and_cache``;
- decode through vLLM's CUDA ``paged_attention_v1``/``v2``. A source tree
  has no compiled ``vllm._C``: those kernels (and ``reshape_and_cache``)
  are built from the tree's csrc/ as the test extension of vLLM's ops
  (tests/support/vllm_ops), registered under vLLM's op names;
- any Triton kernel launch fails the test.

Each case is compared with a float64 reference computed from the full
key/value history (not from the cache). The tolerances:

- fp16: inputs are exact fp16 values in both computations; the kernels
  accumulate in fp32 but round the attention probabilities (SDPA) and the
  output to fp16. Outputs are averages of N(0, 1) values, |out| < 4.5, so
  a rounding step is at most 2**-9 ~ 2e-3 there and errors stay within a
  few steps of |out| ~ 1 (2**-11): atol 5e-3.
- fp32: errors of ~1e-6 are expected on SM 7.0; SM 8.0+ may run fp32
  matmuls of the memory-efficient kernel in TF32 (10-bit mantissa), so
  atol 2e-3.
A wrong mask, a misread block or a wrong head mapping gives errors of
order 0.1 to 1. The worst error of every case is recorded
(record_property, and the JSON lines file named by VLLM_VOLTA_SDPA_RESULTS).

Skips without a CUDA GPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Optional

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip(
        "needs a CUDA GPU (runs vLLM's PagedAttention CUDA kernels and "
        "torch SDPA on the device)",
        allow_module_level=True)

pytestmark = pytest.mark.gpu

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TREE = Path(os.environ.get("VLLM_VOLTA_TREE") or ROOT / "upstream")
if not TREE.is_absolute():
    TREE = (ROOT / TREE).resolve()

BACKEND_PATH = "vllm.attention.backends.torch_sdpa_cuda.TorchSDPACudaBackend"
FORCED_PATH = ("CUDA platform capability mocked to 7.0 -> "
               "get_attn_backend_cls default -> TorchSDPACudaBackend; "
               "SDPA limited to EFFICIENT_ATTENTION; decode through "
               "paged_attention_v1/v2; Triton launches forbidden")
ATOL = {torch.float16: 5e-3, torch.float32: 2e-3}


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ref = _load("vllm_volta_sdpa_reference", HERE / "sdpa_reference.py")
ext_build = _load("vllm_volta_ops_build",
                  ROOT / "tests" / "support" / "vllm_ops" / "build.py")


def _ran_on() -> str:
    major, minor = torch.cuda.get_device_capability()
    return (f"{torch.cuda.get_device_name()} (sm_{major}{minor}), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


@pytest.fixture(scope="module")
def volta_vllm():
    """The tree's vllm, its CUDA ops available, the platform mocked to a
    V100; yields (backend module, how the ops were obtained)."""
    if not (TREE / "vllm" / "__init__.py").exists():
        pytest.fail(f"no vLLM tree at {TREE}: set VLLM_VOLTA_TREE")
    if str(TREE) not in sys.path:
        sys.path.insert(0, str(TREE))
    compiled = list((TREE / "vllm").glob("_C*.so"))
    if compiled:
        # Use the tree's own ops (e.g. an installed vLLM on a V100); drop a
        # stub another conftest may have put in their place.
        stub = sys.modules.get("vllm._C")
        if stub is not None and getattr(stub, "__file__", None) is None:
            del sys.modules["vllm._C"]
        import vllm._C  # noqa: F401
        ops_from = f"the tree's {compiled[0].name}"
    else:
        if not hasattr(torch.ops._C, "paged_attention_v1"):
            lib, seconds = ext_build.load_ops(
                TREE / "csrc",
                build_dir=(Path(os.environ["VLLM_VOLTA_SDPA_BUILD"])
                           if os.environ.get("VLLM_VOLTA_SDPA_BUILD") else
                           None))
            ops_from = f"test extension {lib} ({seconds:.0f} s)"
        else:
            ops_from = "already registered"
        sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))

    import vllm.platforms.cuda as cuda_platform
    from vllm.platforms.interface import DeviceCapability

    patch = pytest.MonkeyPatch()
    patch.setattr(cuda_platform.CudaPlatform, "get_device_capability",
                  classmethod(lambda cls, device_id=0: DeviceCapability(7, 0)))
    try:
        selected = cuda_platform.CudaPlatform.get_attn_backend_cls(
            None, 128, torch.float16, None, 16, False, False)
        assert selected == BACKEND_PATH, selected
        from vllm.utils import resolve_obj_by_qualname
        backend_cls = resolve_obj_by_qualname(selected)
        yield sys.modules[backend_cls.__module__], ops_from, cuda_platform
    finally:
        patch.undo()


@contextlib.contextmanager
def volta_kernels():
    """SDPA restricted to the memory-efficient kernel, Triton forbidden,
    and the PagedAttention variant of each decode call recorded."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vllm import _custom_ops
    from vllm.attention.ops.paged_attn import PagedAttention

    used = []
    patch = pytest.MonkeyPatch()

    def forbidden(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched")

    for variant in ("paged_attention_v1", "paged_attention_v2"):
        real = getattr(_custom_ops, variant)

        def spy(*args, _real=real, _name=variant, **kwargs):
            used.append(_name[-2:])
            return _real(*args, **kwargs)

        patch.setattr(_custom_ops, variant, spy)
    patch.setattr(PagedAttention, "forward_prefix", staticmethod(forbidden))
    try:
        from triton.runtime.jit import JITFunction
        patch.setattr(JITFunction, "run", forbidden)
    except ImportError:
        pass
    try:
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            yield used
    finally:
        patch.undo()


class _Layer:

    def __init__(self, device):
        self._k_scale = torch.ones((), dtype=torch.float32, device=device)
        self._v_scale = torch.ones((), dtype=torch.float32, device=device)


@dataclasses.dataclass
class Case:
    name: str
    seqs: list
    num_heads: int
    num_kv_heads: int
    head_size: int
    dtype: torch.dtype = torch.float16
    block_size: int = 16
    sliding_window: Optional[int] = None
    alibi: bool = False
    # Gemma 2 style logit soft cap (prefill per sequence, decode in torch).
    soft_cap: Optional[float] = None
    # The window is the layer's own (Gemma 2/3 local layers): the runner
    # does not trim the decode block tables, the backend applies it.
    layer_window: bool = False

    def __str__(self):
        return self.name


def P(context, query):
    return ref.Seq(context, query)


def D(total):
    return ref.Seq(total - 1, 1, decode=True)


FP16, FP32 = torch.float16, torch.float32
CASES = [
    # Lengths 1, block_size +- 1, ~512 (plain prefill, no cache read).
    Case("prefill-lens-mha-d128", [P(0, 1), P(0, 15), P(0, 16), P(0, 17),
                                   P(0, 512)], 8, 8, 128),
    # Cached prefix > 0: block-aligned, mid-block, full hit, long prefix.
    Case("prefix-gqa4-d128", [P(16, 1), P(17, 15), P(31, 17), P(500, 12),
                              P(0, 33)], 32, 8, 128),
    # Mixed prefill + decode, decode lengths 1 .. 512.
    Case("mixed-gqa8-d128", [P(0, 17), P(33, 15), D(1), D(15), D(16),
                             D(17), D(512)], 32, 4, 128),
    # > 8192: decode through paged_attention_v2, long plain prefill.
    Case("long-mqa-d64", [P(0, 8195), D(8200), D(9001)], 16, 1, 64),
    Case("long-prefix-gqa4-d128", [P(8190, 40), D(8193)], 8, 2, 128),
    # Head sizes.
    Case("mixed-gqa4-d64", [P(0, 17), P(20, 9), D(17), D(300), D(600)], 8,
         2, 64),
    Case("mixed-gqa4-d80", [P(0, 17), P(20, 9), D(17), D(300), D(600)], 8,
         2, 80),
    Case("mixed-gqa4-d96-bs32", [P(0, 33), P(31, 9), D(31), D(33), D(600)],
         8, 2, 96, block_size=32),
    Case("mixed-mqa-d256", [P(0, 17), P(20, 9), D(17), D(300), D(600)], 8, 1,
         256),
    # fp32.
    Case("mixed-mha-d128-fp32", [P(0, 17), P(40, 24), D(1), D(17), D(700)],
         4, 4, 128, FP32),
    Case("mixed-gqa4-d80-fp32", [P(0, 15), P(16, 16), D(15), D(520)], 8, 2,
         80, FP32),
    # Sliding window (prefill exact; decode over the runner's window tail).
    Case("window64-gqa8-d128", [P(0, 200), P(100, 50), P(0, 40), D(300),
                                D(40), D(130)], 16, 2, 128,
         sliding_window=64),
    Case("window64-gqa4-d64-fp32", [P(0, 150), P(70, 30), D(200)], 8, 2, 64,
         FP32, sliding_window=64),
    # ALiBi (bias in the SDPA mask; in the kernel for decode).
    Case("alibi-mha-d128", [P(0, 40), P(25, 10), D(50), D(700)], 8, 8, 128,
         alibi=True),
    # Per-layer windows (Gemma 3 local layers, window 1024 at 2x; the
    # decode reads only the window from the paged cache).
    Case("layer-window1024-gqa2-d256", [P(0, 2048), P(1500, 600), D(2048),
                                        D(1030), D(700)], 8, 4, 256,
         sliding_window=1024, layer_window=True),
    # Soft cap (Gemma 2 runs fp32 on a V100; head size 256). The cap is
    # small enough that capping changes these random scores.
    Case("softcap2-gqa2-d256-fp32", [P(0, 90), P(40, 20), D(90), D(300)], 8,
         4, 256, FP32, soft_cap=2.0),
    Case("softcap2-layer-window64-gqa2-d256-fp32", [P(0, 200), P(100, 30),
                                                    D(200), D(70)], 8, 4, 256,
         FP32, sliding_window=64, soft_cap=2.0, layer_window=True),
    # Long cached context (> 32K, V0's default path with prefix caching or
    # chunked prefill): the context is read in chunks and merged.
    Case("long-context-64k-gqa4-d128", [P(65536, 32), P(0, 64), D(65600)],
         16, 4, 128),
]


def _record(record_property, ops_from, **result):
    record_property("ran_on", _ran_on())
    record_property("forced_path", FORCED_PATH)
    record_property("ops", ops_from)
    record_property(
        "result", f"worst |err| prefill {result['worst_prefill']:.2e}, "
        f"decode {result['worst_decode']:.2e} (atol {result['atol']:.0e}; "
        f"paged {'/'.join(result['paged_attention']) or '-'})")
    for key, value in result.items():
        record_property(key, value)
    path = os.environ.get("VLLM_VOLTA_SDPA_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dict(result, ran_on=_ran_on(), ops=ops_from))
                    + "\n")


def _fill_context(batch, histories, kv_cache, case, device):
    """Write every sequence's context with vLLM's reshape_and_cache, as
    the engine did on the earlier steps."""
    key_cache, value_cache = ref.split_kv_cache(kv_cache, case.num_kv_heads,
                                                case.head_size)
    slots = ref.context_slot_mapping(batch, device)
    if len(slots):
        ck, cv = ref.context_kv(batch, histories)
        one = torch.ones((), dtype=torch.float32, device=device)
        torch.ops._C_cache_ops.reshape_and_cache(ck, cv, key_cache,
                                                 value_cache, slots, "auto",
                                                 one, one)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(volta_vllm, case, record_property):
    backend, ops_from, cuda_platform = volta_vllm
    device = torch.device("cuda")
    # The backend the mocked V100 selects for this case's shapes.
    assert cuda_platform.CudaPlatform.get_attn_backend_cls(
        None, case.head_size, case.dtype, None, case.block_size, False,
        False) == BACKEND_PATH

    batch = ref.make_batch(case.seqs, case.block_size,
                           None if case.layer_window else case.sliding_window,
                           seed=len(case.name))
    histories = ref.make_qkv(batch, case.num_heads, case.num_kv_heads,
                             case.head_size, case.dtype, device,
                             seed=len(case.name))
    kv_cache = ref.empty_kv_cache(batch.num_blocks, case.block_size,
                                  case.num_kv_heads, case.head_size,
                                  case.dtype, device)
    _fill_context(batch, histories, kv_cache, case, device)
    meta = backend.TorchSDPACudaMetadata(
        **ref.batch_metadata_fields(batch, device))
    slopes = ref.alibi_slopes(case.num_heads) if case.alibi else None
    scale = case.head_size**-0.5
    impl = backend.TorchSDPACudaImpl(
        case.num_heads, case.head_size, scale, case.num_kv_heads,
        None if slopes is None else slopes.tolist(), case.sliding_window,
        "auto", logits_soft_cap=case.soft_cap)
    if case.layer_window:
        # What the impl decides when the engine's model config leaves the
        # window to the layers (tests/patches/test_attention_sdpa_window_
        # decode.py checks that decision).
        impl.decode_in_torch = True
    q, k, v = ref.step_inputs(batch, histories)

    with volta_kernels() as paged_variants:
        out = impl.forward(_Layer(device), q.flatten(1), k.flatten(1),
                           v.flatten(1), kv_cache, meta)
        torch.cuda.synchronize()
    out = out.view_as(q)

    window = case.sliding_window if case.layer_window else None
    expected = ref.reference_outputs(batch, histories, scale, alibi=slopes,
                                     soft_cap=case.soft_cap,
                                     layer_window=window)
    if case.soft_cap is not None or case.layer_window:
        # The case must be able to fail: without the cap (or the window)
        # the answer is different.
        plain = ref.reference_outputs(batch, histories, scale, alibi=slopes)
        assert max((a - b).abs().max().item()
                   for a, b in zip(plain, expected)) > 10 * ATOL[case.dtype]
    worst = {"prefill": 0.0, "decode": 0.0}
    start = 0
    for seq, exp in zip(batch.seqs, expected):
        got = out[start:start + seq.query]
        start += seq.query
        assert torch.isfinite(got).all(), f"non-finite output in {seq}"
        err = (got.double() - exp).abs().max().item()
        kind = "decode" if seq.decode else "prefill"
        worst[kind] = max(worst[kind], err)
    atol = ATOL[case.dtype]
    result = dict(case=case.name,
                  dtype=str(case.dtype).replace("torch.", ""),
                  heads=f"{case.num_heads}/{case.num_kv_heads}",
                  head_size=case.head_size,
                  block_size=case.block_size,
                  sliding_window=case.sliding_window,
                  alibi=case.alibi,
                  soft_cap=case.soft_cap,
                  layer_window=case.layer_window,
                  lens=[(s.context, s.query) for s in batch.seqs],
                  paged_attention=sorted(set(paged_variants)),
                  worst_prefill=worst["prefill"],
                  worst_decode=worst["decode"],
                  atol=atol,
                  passed=max(worst.values()) <= atol)
    _record(record_property, ops_from, **result)
    if batch.decodes and not impl.decode_in_torch:
        assert paged_variants, "decode did not reach paged_attention"
    if any(s.total > 8192 for s in batch.decodes):
        assert "v2" in paged_variants
    assert max(worst.values()) <= atol, result


def test_cuda_graph_decode(volta_vllm, record_property):
    """Decode captured in a CUDA graph (as the V0 runner does), replayed
    with other sequence lengths, block tables and slots."""
    backend, ops_from, _ = volta_vllm
    device = torch.device("cuda")
    heads, kv_heads, d, bs = 8, 2, 128, 16
    max_blocks, capture_len = 64, 1024  # max_seq_len_to_capture
    num_blocks = 4 * max_blocks
    kv_cache = ref.empty_kv_cache(num_blocks, bs, kv_heads, d, FP16, device)
    key_cache, value_cache = ref.split_kv_cache(kv_cache, kv_heads, d)
    n = 4
    static = dict(
        q=torch.zeros(n, heads * d, dtype=FP16, device=device),
        k=torch.zeros(n, kv_heads * d, dtype=FP16, device=device),
        v=torch.zeros(n, kv_heads * d, dtype=FP16, device=device),
        slots=torch.full((n, ), -1, dtype=torch.long, device=device),
        seq_lens=torch.ones(n, dtype=torch.int32, device=device),
        tables=torch.zeros(n, max_blocks, dtype=torch.int32, device=device),
    )
    meta = backend.TorchSDPACudaMetadata(
        num_prefills=0,
        num_prefill_tokens=0,
        num_decode_tokens=n,
        slot_mapping=static["slots"],
        multi_modal_placeholder_index_maps=None,
        enable_kv_scales_calculation=True,
        seq_lens=None,
        seq_lens_tensor=static["seq_lens"],
        max_query_len=1,
        max_decode_query_len=1,
        max_prefill_seq_len=0,
        max_decode_seq_len=capture_len,
        block_tables=static["tables"],
        use_cuda_graph=True)
    impl = backend.TorchSDPACudaImpl(heads, d, d**-0.5, kv_heads, None,
                                     None, "auto")
    layer = _Layer(device)

    def step():
        return impl.forward(layer, static["q"], static["k"], static["v"],
                            kv_cache, meta)

    worst = 0.0
    with volta_kernels() as paged_variants:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()
        for trial, totals in enumerate(([17, 100, 513, 1000], [1, 16, 900,
                                                               33])):
            seqs = [D(t) for t in totals]
            batch = ref.make_batch(seqs, bs, seed=trial)
            batch.block_tables = [[b % num_blocks for b in t]
                                  for t in batch.block_tables]
            histories = ref.make_qkv(batch, heads, kv_heads, d, FP16,
                                     device, seed=10 + trial)
            case = Case("graph", seqs, heads, kv_heads, d)
            _fill_context(batch, histories, kv_cache, case, device)
            fields = ref.batch_metadata_fields(batch, device)
            q, k, v = ref.step_inputs(batch, histories)
            static["q"].copy_(q.flatten(1))
            static["k"].copy_(k.flatten(1))
            static["v"].copy_(v.flatten(1))
            static["slots"].copy_(fields["slot_mapping"])
            static["seq_lens"].copy_(fields["seq_lens_tensor"])
            static["tables"].zero_()
            width = fields["block_tables"].shape[1]
            static["tables"][:, :width].copy_(fields["block_tables"])
            graph.replay()
            torch.cuda.synchronize()
            expected = torch.cat(ref.reference_outputs(batch, histories,
                                                       d**-0.5))
            worst = max(worst,
                        (out.view_as(q).double() - expected).abs().max().item())
    result = dict(case="cuda-graph-decode-gqa4-d128",
                  dtype="float16",
                  heads=f"{heads}/{kv_heads}",
                  head_size=d,
                  block_size=bs,
                  sliding_window=None,
                  alibi=False,
                  lens="decode totals [17, 100, 513, 1000], then "
                  "[1, 16, 900, 33]",
                  paged_attention=sorted(set(paged_variants)),
                  worst_prefill=0.0,
                  worst_decode=worst,
                  atol=ATOL[FP16],
                  passed=worst <= ATOL[FP16])
    _record(record_property, ops_from, **result)
    assert worst <= ATOL[FP16], result


def test_long_context_prefill_memory_is_bounded(volta_vllm, record_property):
    """Peak memory of one layer's prefill of 512 new tokens after a cached
    context of 16K and 64K tokens (Llama-3.1-8B layer: 32 query heads, 8 KV
    heads, head size 128, fp16), over what the inputs and the output take.

    Bound of the chunked route, independent of the context length: the
    gathered K and V of one chunk and one of them laid out beside the new
    tokens (3 x CONTEXT_CHUNK_ELEMENTS fp16), the fp32 merge state and its
    temporaries (6 x tokens x heads x head size x 4 bytes), plus 16 MiB. The per-sequence route (the loop,
    kept for ALiBi and soft-capped layers) is measured beside it.
    """
    backend, ops_from, _ = volta_vllm
    from vllm.attention.ops import mem_efficient_varlen as varlen
    device = torch.device("cuda")
    heads, kv_heads, d, bs, q_len = 32, 8, 128, 16, 512
    chunk_bytes = 3 * varlen.CONTEXT_CHUNK_ELEMENTS * 2
    bound = chunk_bytes + 6 * q_len * heads * d * 4 + (16 << 20)
    impl = backend.TorchSDPACudaImpl(heads, d, d**-0.5, kv_heads, None, None,
                                     "auto")
    layer = _Layer(device)
    rows = []
    for context in (16384, 65536):
        total = context + q_len
        num_blocks = -(-total // bs) + 1
        kv_cache = torch.randn(2, num_blocks, bs * kv_heads * d,
                               dtype=FP16, device=device)
        key_cache, value_cache = ref.split_kv_cache(kv_cache, kv_heads, d)
        table = torch.randperm(num_blocks, device=device)[:-1].int()[None]
        q = torch.randn(q_len, heads * d, dtype=FP16, device=device)
        k = torch.randn(q_len, kv_heads * d, dtype=FP16, device=device)
        v = torch.randn(q_len, kv_heads * d, dtype=FP16, device=device)
        batch = ref.Batch([ref.Seq(context, q_len)], bs, [table[0].tolist()],
                          num_blocks, None)
        fields = ref.batch_metadata_fields(batch, device)
        fields["query_lens"] = [q_len]
        meta = backend.TorchSDPACudaMetadata(**fields)
        peaks = {}
        with volta_kernels():
            for route in ("chunked", "per-sequence"):
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                if route == "chunked":
                    out = impl.forward(layer, q, k, v, kv_cache, meta)
                else:
                    out = torch.empty(q_len, heads, d, dtype=FP16,
                                      device=device)
                    backend.forward_prefill_sdpa(
                        out, q.view(q_len, heads, d),
                        k.view(q_len, kv_heads, d),
                        v.view(q_len, kv_heads, d), [q_len], [q_len],
                        d**-0.5, True, context_lens=[context],
                        key_cache=key_cache, value_cache=value_cache,
                        block_tables=table)
                torch.cuda.synchronize()
                peaks[route] = (torch.cuda.max_memory_allocated() - base -
                                out.numel() * out.element_size())
                del out
        rows.append((context, peaks))
        del kv_cache, key_cache, value_cache
    mib = 1 << 20
    result = dict(case="long-context-prefill-memory-32x8-d128",
                  bound_mib=round(bound / mib, 1),
                  peaks_mib={
                      c: {r: round(b / mib, 1) for r, b in p.items()}
                      for c, p in rows
                  })
    record_property("ran_on", _ran_on())
    record_property("forced_path", FORCED_PATH)
    record_property("result", json.dumps(result))
    path = os.environ.get("VLLM_VOLTA_SDPA_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dict(result, ran_on=_ran_on())) + "\n")
    for context, peaks in rows:
        assert peaks["chunked"] <= bound, result
