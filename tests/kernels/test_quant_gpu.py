"""GPU numerics of the 4-bit paths a V100 takes: AWQ dense and AWQ MoE.

Needs a CUDA GPU (skipped with the reason without one). As in
test_moe_gpu.py, the Volta path is forced on whatever GPU runs the test:
the platform stand-in reports compute capability (7, 0), so the tree's own
host code picks what it picks on a V100, and the launches run through
Triton on the real GPU. Only kernel modules are loaded, not vLLM: the
top-level functions of the tree's awq_triton.py (and AWQLinearMethod's
`_apply_triton` from awq.py, the dispatch between the two AWQ paths) are
compiled into small modules with stand-ins for vLLM's platform, so torch
and Triton are all the test needs.

- AWQ dense: `_apply_triton` at the default threshold (the fused
  awq_gemm_kernel with fp32 dot operands for M <= 16, the dequantize
  kernel and an fp16 torch.matmul above) and with the fused kernel forced
  at every M, against x @ W in fp32 with W dequantized to fp32 in torch
  from the packed tensors (no vLLM code in the reference).
- AWQ MoE on the moe_wna16 Triton kernel (fused_moe_kernel_gptq_awq, int4
  with zero points, dot_fp32 on 7.0), against an fp32 MoE on the
  dequantized expert weights. The CUDA moe_wna16_gemm that serves tiny
  batches is upstream's CUDA code and not under test: the Triton kernel is
  forced at every M.

Tolerance (per token, as in test_moe_gpu.py). Products and sums are fp32
on both sides (cuBLAS may reduce fp16 GEMMs in reduced precision, which
the budget covers). What differs from the reference: each dequantized
weight is rounded to fp16 once (at most u = 2**-11 relative, (q - z) * s
with s fp16), and the output is rounded to fp16 once (the MoE path also
rounds its first GEMM and the activation). Weight roundings with random
signs add about u / sqrt(3) * rms(row) to an output, the output rounding
at most u * |out|, and the largest over a row of ~10**3..10**4 outputs
lies within ~5 rms: about 5 * (0.58 + 1) * u ~ 3.9e-3 of the row's rms
(the MoE path ~5e-3). We allow max|out - ref| <= 1.5e-2 * rms(ref row),
the MoE test's bound (3x that), and report the worst error seen.
"""
from __future__ import annotations

import ast
import importlib.util
import math
import sys
import tempfile
import textwrap
import types
from pathlib import Path
from typing import NamedTuple

import pytest

import _aot

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU: the quantized numerics tests run on a GPU "
                "(the sm_70 compile checks are in test_aot_sm70.py)",
                allow_module_level=True)
triton = pytest.importorskip("triton")

TOLERANCE = 1.5e-2  # of rms(ref row); see the module docstring
AWQ_NAMES = ["awq_dot_in_fp32", "awq_dequantize_kernel", "awq_gemm_kernel",
             "awq_dequantize_triton", "awq_gemm_triton"]
AWQ_HOST = ["awq_triton_gemm_max_tokens"]
# AutoAWQ packs eight output columns per int32 in this order.
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


class _Capability(NamedTuple):
    major: int
    minor: int

    def as_version_str(self) -> str:
        return f"{self.major}.{self.minor}"


class _Platform:
    """Stands in for vllm.platforms.current_platform."""
    capability = (7, 0)

    def is_cuda(self):
        return True

    def is_rocm(self):
        return False

    def get_device_capability(self, device_id=0):
        return _Capability(*self.capability)

    def has_device_capability(self, capability, device_id=0):
        return self.capability[0] * 10 + self.capability[1] >= capability


def _write_module(name: str, parts: list[str], **attrs):
    # Triton reads kernel source with inspect: it must live in a file.
    folder = Path(tempfile.mkdtemp(prefix="volta_quant_"))
    path = folder / f"{name}.py"
    path.write_text("\n\n\n".join(parts) + "\n")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _take(path: Path, names: list[str], assigns: list[str] = ()):
    """Source of the named top-level functions and assignments of a file."""
    source = path.read_text()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            start = min([node.lineno] + [d.lineno
                                         for d in node.decorator_list])
            found[node.name] = "\n".join(lines[start - 1:node.end_lineno])
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) in assigns for t in node.targets):
            found[node.targets[0].id] = "\n".join(
                lines[node.lineno - 1:node.end_lineno])
    missing = [n for n in [*names, *assigns] if n not in found]
    if missing:
        pytest.fail(f"{path} lacks {missing}: is VLLM_VOLTA_TREE the "
                    "patched tree?")
    return [found[n] for n in [*assigns, *names]]


def load_awq(tree: Path):
    """The tree's Triton AWQ kernels and AWQ's Volta dispatch, without
    vLLM. Returns (kernel module, apply(x, qweight, scales, qzeros))."""
    quant = tree / "vllm/model_executor/layers/quantization"
    header = "import os\nimport torch\nimport triton\nimport triton.language as tl\n"
    kernels = _write_module(
        "volta_awq_triton",
        [header] + _take(quant / "awq_triton.py", AWQ_NAMES,
                         ["AWQ_TRITON_SUPPORTED_GROUP_SIZES"]),
        current_platform=_Platform())
    source = (quant / "awq.py").read_text()
    method = None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "_apply_triton":
            method = textwrap.dedent("\n".join(
                source.splitlines()[node.lineno - 1:node.end_lineno]))
    if method is None:
        pytest.fail(f"{quant / 'awq.py'} has no AWQLinearMethod."
                    "_apply_triton: is VLLM_VOLTA_TREE the patched tree?")
    method = method.replace("from .awq_triton import",
                            "from volta_awq_triton import")
    host = _write_module(
        "volta_awq", [header] + _take(quant / "awq.py", AWQ_HOST,
                                      ["AWQ_TRITON_GEMM_MAX_TOKENS"]) +
        [method])
    this = types.SimpleNamespace(
        quant_config=types.SimpleNamespace(pack_factor=8))
    return kernels, host, lambda *args: host._apply_triton(this, *args)


@pytest.fixture(scope="module")
def awq():
    return load_awq(_aot.tree())


class _Recorder:
    """Wraps a Triton kernel: forwards launches, keeps their kwargs."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.calls = []

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.calls.append(kwargs)
            return launch(*args, **kwargs)

        return run


def pack_awq(q: torch.Tensor) -> torch.Tensor:
    """int 0..15 [rows, cols] -> AutoAWQ int32 [rows, cols // 8]."""
    rows, cols = q.shape
    q = q.to(torch.int64).reshape(rows, cols // 8, 8)
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64, device=q.device)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= q[..., column] << (4 * nibble)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


def awq_layer(K: int, N: int, group: int, seed: int):
    """Random AWQ tensors and the fp32 [K, N] weight they stand for."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randint(0, 16, (K, N), device="cuda", generator=g)
    z = torch.randint(0, 16, (K // group, N), device="cuda", generator=g)
    # scales near 1 / (4 sqrt(K)): outputs of order one
    s = ((torch.rand(K // group, N, device="cuda", generator=g) + 0.5) /
         (4 * math.sqrt(K))).half()
    w = ((q - z.repeat_interleave(group, 0)).float() *
         s.float().repeat_interleave(group, 0))
    return pack_awq(q), s, pack_awq(z), w


def per_token_error(out, ref) -> float:
    """max over tokens of max|out - ref| / rms(ref row)."""
    rms = ref.pow(2).mean(dim=-1).sqrt().clamp_min(1e-30)
    return ((out.float() - ref).abs().amax(dim=-1) / rms).max().item()


@pytest.fixture(scope="module")
def worst():
    data = {}
    yield data
    if data:
        print("\nworst max|out-ref|/rms(ref row):")
        for key, value in sorted(data.items()):
            print(f"  {key}: {value:.3e}")


# (name, K, N): Qwen2.5-7B-AWQ qkv at TP 1, its down_proj at TP 2, a small
# layer; group 128 (the AWQ default), 64 and 32 on the small one.
AWQ_SHAPES = [("qkv", 3584, 4608, 128), ("down-tp2", 9472, 3584, 128),
              ("small-g64", 512, 256, 64), ("small-g32", 512, 256, 32)]
AWQ_BATCHES = [1, 7, 16, 17, 64, 333, 1024, 4096]
AWQ_CASES = [(s, m) for s in AWQ_SHAPES for m in AWQ_BATCHES]


@pytest.mark.gpu
@pytest.mark.parametrize("forced", [False, True],
                         ids=["default-threshold", "gemm-at-every-M"])
@pytest.mark.parametrize("shape,M", AWQ_CASES,
                         ids=[f"{s[0]}-M{m}" for s, m in AWQ_CASES])
def test_awq_volta_matches_fp32_reference(awq, worst, record_property,
                                          monkeypatch, shape, M, forced):
    kernels, host, apply = awq
    record_property("ran_on", torch.cuda.get_device_name())
    kernels.current_platform.capability = (7, 0)
    if forced:
        monkeypatch.setenv("VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS", "4096")
    else:
        monkeypatch.delenv("VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS", raising=False)
    name, K, N, group = shape
    qweight, scales, qzeros, w = awq_layer(K, N, group, seed=K + N + M)
    g = torch.Generator(device="cuda").manual_seed(M)
    x = torch.randn(M, K, device="cuda", generator=g).half()
    gemm = _Recorder(kernels.awq_gemm_kernel)
    dequant = _Recorder(kernels.awq_dequantize_kernel)
    monkeypatch.setattr(kernels, "awq_gemm_kernel", gemm)
    monkeypatch.setattr(kernels, "awq_dequantize_kernel", dequant)
    out = apply(x, qweight, scales, qzeros)
    torch.cuda.synchronize()
    assert out.shape == (M, N) and out.dtype == torch.float16
    fused = forced or M <= host.AWQ_TRITON_GEMM_MAX_TOKENS
    if fused:
        assert len(gemm.calls) == 1 and not dequant.calls
        assert gemm.calls[0]["DOT_FP32"] is True
        path = (f"awq_gemm_kernel DOT_FP32 BLOCK_M "
                f"{gemm.calls[0]['BLOCK_SIZE_M']} split-K "
                f"{gemm.calls[0]['SPLIT_K']}")
    else:
        assert len(dequant.calls) == 1 and not gemm.calls
        path = "awq_dequantize_kernel + fp16 torch.matmul"
    ref = x.float() @ w
    err = per_token_error(out, ref)
    key = f"awq-{'gemm' if fused else 'dequant'}"
    worst[key] = max(worst.get(key, 0.0), err)
    record_property("forced_path", f"capability (7,0): {path}, {name} "
                    f"K{K} N{N} g{group}")
    record_property("result", f"max|err|/rms(ref row) {err:.2e}")
    assert math.isfinite(err) and err <= TOLERANCE, (
        f"max|out-ref| = {err:.3e} * rms(ref row), allowed {TOLERANCE}")


@pytest.mark.gpu
@pytest.mark.parametrize("M", [1, 16, 64])
def test_awq_volta_path_matches_fp16_path(awq, record_property, M):
    """The fused kernel on the Volta path (fp32 operands and partial sums)
    and on the sm_80+ path (fp16 operands and accumulator) of the same
    tree, against the fp32 reference."""
    kernels, _, _ = awq
    record_property("ran_on", torch.cuda.get_device_name())
    qweight, scales, qzeros, w = awq_layer(3584, 4608, 128, seed=M)
    x = torch.randn(M, 3584, device="cuda",
                    generator=torch.Generator(device="cuda").manual_seed(M)
                    ).half()
    ref = x.float() @ w
    errs = {}
    for name, cap in (("sm_70 path", (7, 0)), ("sm_90 path", (9, 0))):
        kernels.current_platform.capability = cap
        try:
            out = kernels.awq_gemm_triton(x, qweight, scales, qzeros, 8,
                                          block_size_m=16)
        finally:
            kernels.current_platform.capability = (7, 0)
        errs[name] = per_token_error(out, ref)
    record_property("forced_path", "capability (7,0) vs (9,0), awq_gemm, "
                    "Qwen2.5-7B qkv K3584 N4608 g128")
    record_property("result",
                    ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    # The sm_80+ path accumulates in fp16 (upstream's kernel): reported for
    # comparison, not held to the Volta path's bound.
    assert math.isfinite(errs["sm_90 path"]), errs
    assert errs["sm_70 path"] <= TOLERANCE, errs


# --- AWQ MoE on moe_wna16 -----------------------------------------------------


@pytest.fixture(scope="module")
def km():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_moe_gpu import load_kernel_module
    return load_kernel_module(_aot.tree())


def moe_wna16_awq(E: int, rows: int, cols: int, group: int, seed: int):
    """Random int4 expert weights with zero points in moe_wna16's layout
    (what MoeWNA16Method's loader makes of AWQ tensors): qweight uint8
    [E, rows, cols / 2] (low nibble: even input), scales [E, rows,
    cols / group], zero points uint8 [E, rows / 2, cols / group] (low
    nibble: even row); and the fp32 [E, rows, cols] weights."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randint(0, 16, (E, rows, cols), device="cuda", generator=g)
    z = torch.randint(0, 16, (E, rows, cols // group), device="cuda",
                      generator=g)
    s = ((torch.rand(E, rows, cols // group, device="cuda", generator=g) +
          0.5) / (4 * math.sqrt(cols))).half()
    w = ((q - z.repeat_interleave(group, -1)).float() *
         s.float().repeat_interleave(group, -1))
    qweight = (q[..., 0::2] | (q[..., 1::2] << 4)).to(torch.uint8)
    zeros = (z[:, 0::2] | (z[:, 1::2] << 4)).to(torch.uint8)
    return qweight.contiguous(), s.contiguous(), zeros.contiguous(), w


MOE_BATCHES = [1, 7, 64, 333, 1024]


@pytest.mark.gpu
@pytest.mark.parametrize("M", MOE_BATCHES)
def test_awq_moe_wna16_matches_fp32_reference(km, worst, record_property,
                                              monkeypatch, M):
    """Qwen3-30B-A3B-like experts (shrunk: E 16, top 8, K 2048, N 768 at
    TP 1), int4 g128 with zero points, routed weights on w2."""
    from test_moe_gpu import align, reference
    record_property("ran_on", torch.cuda.get_device_name())
    km.current_platform.capability = (7, 0)
    # Force the Triton kernel (the CUDA moe_wna16_gemm is not under test).
    monkeypatch.setattr(km, "should_moe_wna16_use_cuda",
                        lambda *args, **kwargs: False)
    E, top_k, K, N, group = 16, 8, 2048, 768, 128
    w1q, w1s, w1z, w1 = moe_wna16_awq(E, 2 * N, K, group, seed=M)
    w2q, w2s, w2z, w2 = moe_wna16_awq(E, K, N, group, seed=M + 1)
    g = torch.Generator(device="cuda").manual_seed(M + 2)
    x = torch.randn(M, K, device="cuda", generator=g).half()
    logits = torch.randn(M, E, device="cuda", generator=g)
    topk_w, topk_ids = torch.softmax(logits, dim=-1).topk(top_k, dim=-1)
    topk_w, topk_ids = topk_w.float().contiguous(), topk_ids.to(torch.int32)
    block_shape = [0, group]
    config = km.get_default_config(M, E, N, K, top_k, "int4_w4a16", False,
                                   block_shape)
    sorted_ids, expert_ids, post_pad = align(topk_ids,
                                             config["BLOCK_SIZE_M"], E)
    cache1 = torch.empty(M, top_k, 2 * N, dtype=x.dtype, device="cuda")
    cache3 = torch.empty(M, top_k, K, dtype=x.dtype, device="cuda")
    common = dict(use_fp8_w8a8=False, use_int8_w8a8=False,
                  use_int8_w8a16=False, use_int4_w4a16=True,
                  per_channel_quant=False, block_shape=block_shape,
                  compute_type=triton.language.float16)
    recorder = _Recorder(km.fused_moe_kernel_gptq_awq)
    monkeypatch.setattr(km, "fused_moe_kernel_gptq_awq", recorder)
    km.invoke_fused_moe_kernel(x, w1q, cache1, None, w1s, w1z, topk_w,
                               sorted_ids, expert_ids, post_pad, False,
                               top_k, config, **common)
    gate, up = cache1.view(-1, 2 * N).float().chunk(2, dim=-1)
    act = (torch.nn.functional.silu(gate) * up).half()
    km.invoke_fused_moe_kernel(act, w2q, cache3, None, w2s, w2z, topk_w,
                               sorted_ids, expert_ids, post_pad, True, 1,
                               config, **common)
    torch.cuda.synchronize()
    out = cache3.float().sum(dim=1)
    assert [c["dot_fp32"] for c in recorder.calls] == [True, True]
    assert all(c["has_zp"] for c in recorder.calls)
    ref = reference(x, w1, w2, topk_w, topk_ids, "w2")
    err = per_token_error(out, ref)
    worst["awq-moe-wna16"] = max(worst.get("awq-moe-wna16", 0.0), err)
    c = recorder.calls[0]
    record_property(
        "forced_path", "capability (7,0): fused_moe_kernel_gptq_awq "
        f"dot_fp32 int4 zp g{group}, {c['BLOCK_SIZE_M']}x"
        f"{c['BLOCK_SIZE_N']}x{c['BLOCK_SIZE_K']}")
    record_property("result", f"max|err|/rms(ref row) {err:.2e}")
    assert math.isfinite(err) and err <= TOLERANCE, (
        f"max|out-ref| = {err:.3e} * rms(ref row), allowed {TOLERANCE}")
