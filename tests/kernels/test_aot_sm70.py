"""Ahead-of-time sm_70 compilation of the Triton kernels a V100 reaches.

CPU only (Triton ships ptxas). For each kernel reachable on a V100's
default paths, the tree's own host code picks the configuration with the
device capability mocked to (7, 0), and every launch it makes is compiled
for cuda:70 instead of run (see _aot.py). Each compiled kernel must fit
the 98,304 bytes of shared memory a V100 block may use, and the configs
the patched tree picks by default must not spill registers.

Shapes are real models' MoE layers at tensor-parallel 1, 2 and 4, with
M (tokens in the batch) in 1..4096. Identical (config, constexpr)
specialisations compile once per process (Triton's in-process cache) and
are skipped on later runs by Triton's on-disk cache (TRITON_CACHE_DIR).

Run:  VLLM_VOLTA_TREE=<vllm tree> pytest tests/kernels/test_aot_sm70.py
On the unpatched v0.9.2 tree this fails: Triton 3.3.0 cannot compile the
fp16 tl.dot of the MoE kernels for sm_70 ("PassManager::run failed").
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path

import pytest

import _aot

triton = pytest.importorskip("triton", reason="Triton is not installed")

RAN_ON = "cpu-aot"


@dataclasses.dataclass(frozen=True)
class MoEModel:
    name: str
    hidden: int  # K of the first GEMM
    intermediate: int  # per-expert FFN size before tensor parallelism
    experts: int
    top_k: int


MODELS = [
    MoEModel("Mixtral-8x7B", 4096, 14336, 8, 2),
    MoEModel("Qwen1.5-MoE-A2.7B", 2048, 1408, 60, 4),
    MoEModel("Qwen3-30B-A3B", 2048, 768, 128, 8),
    # MLA off (VLLM_MLA_DISABLE=1 or the sm_70 default): MoE is the same.
    MoEModel("DeepSeek-V2-Lite", 2048, 1408, 64, 6),
]
TPS = [1, 2, 4]
BATCHES = [1, 16, 64, 256, 1024, 4096]
# Each GEMM stage: (name of the tensor, whether routed weights are applied)
CASES = [(m, tp) for m in MODELS for tp in TPS]


@pytest.fixture(scope="module")
def fm():
    if _aot.has_cuda():
        pytest.skip("a GPU is present: the AOT tests run on CPU machines")
    _aot.install(70)
    return importlib.import_module(
        "vllm.model_executor.layers.fused_moe.fused_moe")


@pytest.fixture(scope="module")
def tl(fm):
    from vllm.triton_utils import HAS_TRITON, tl
    assert HAS_TRITON, "vLLM disabled Triton: conftest must install the " \
        "AOT driver before vllm is imported"
    return tl


@pytest.fixture(scope="module")
def stats():
    """Totals over the module, printed at the end."""
    data = {"launches": 0, "kernels": {}, "max_shared": 0}
    yield data
    print(f"\nAOT sm_70: {data['launches']} launches, "
          f"{len(data['kernels'])} distinct compiles, "
          f"max shared {data['max_shared']} bytes")


def _meta(*shape, dtype=None):
    return _aot.meta(*shape, dtype=dtype)


def _launch_moe(fm, tl, *, M, E, N, K, top_k, quant=None, group=128,
                stages=2, zero_points=False):
    """Run fused_experts_impl's two invoke_fused_moe_kernel calls (w13 and
    w2) for M tokens, on meta tensors; return the config the tree picked.

    N is the per-rank intermediate size (w13 has 2N rows). zero_points:
    the layer has moe_wna16 zero points (AWQ, asymmetric GPTQ)."""
    import torch
    int4 = quant == "int4_w4a16"
    int8 = quant == "int8_w8a16"
    block_shape = [0, group] if quant else None
    pack = 2 if int4 else 1
    wdtype = torch.uint8 if int4 else torch.int8 if int8 else torch.float16
    w1 = (E, 2 * N, K // pack)
    w2 = (E, K, N // pack)
    config = fm.try_get_optimal_moe_config(w1, w2, top_k, quant, M,
                                           block_shape=block_shape)
    bm = config["BLOCK_SIZE_M"]
    padded = M * top_k + E * (bm - 1)
    sorted_ids = _meta(padded, dtype=torch.int32)
    expert_ids = _meta((padded + bm - 1) // bm, dtype=torch.int32)
    post_pad = _meta(1, dtype=torch.int32)
    weights = _meta(M, top_k, dtype=torch.float32)
    # moe_wna16 zero points: [E, rows // pack, K // group] uint8 (int4) or
    # [E, rows, K // group] int8 (int8).
    zdtype = torch.uint8 if int4 else torch.int8
    zp1 = _meta(E, 2 * N // pack, K // group, dtype=zdtype)
    zp2 = _meta(E, K // pack, N // group, dtype=zdtype)
    gemms = [
        # (A, B, C, B scale, B zero points, mul_routed_weight, top_k)
        (_meta(M, K), _meta(*w1, dtype=wdtype), _meta(M, top_k, 2 * N),
         _meta(E, K // group, 2 * N) if quant else None,
         zp1 if zero_points else None, False, top_k),
        (_meta(M * top_k, N), _meta(*w2, dtype=wdtype), _meta(M, top_k, K),
         _meta(E, N // group, K) if quant else None,
         zp2 if zero_points else None, True, 1),
    ]
    for a, b, c, b_scale, b_zp, mul_routed, k in gemms[:stages]:
        fm.invoke_fused_moe_kernel(a, b, c, None, b_scale, b_zp, weights,
                                   sorted_ids, expert_ids, post_pad,
                                   mul_routed, k, config, tl.float16,
                                   use_fp8_w8a8=False,
                                   use_int8_w8a8=False,
                                   use_int8_w8a16=int8,
                                   use_int4_w4a16=int4,
                                   per_channel_quant=False,
                                   block_shape=block_shape)
    return config


def _check(compiled, stats, spill_free=True):
    """Assert each compiled kernel fits; return a short summary."""
    worst = 0
    regs_max = 0
    for c in compiled:
        assert c.target == 70
        stats["launches"] += 1
        key = (c.name, c.kernel.hash)
        if key not in stats["kernels"]:
            regs, stack = _aot.registers(c)
            stats["kernels"][key] = (c.shared, regs, stack)
        shared, regs, stack = stats["kernels"][key]
        stats["max_shared"] = max(stats["max_shared"], shared)
        assert shared <= _aot.VOLTA_MAX_SHARED, (
            f"{c.name} {c.constexprs} needs {shared} bytes of shared "
            f"memory; a V100 block has {_aot.VOLTA_MAX_SHARED}")
        if spill_free:
            assert stack == 0, (f"{c.name} {c.constexprs} spills: {regs} "
                                f"registers, {stack} bytes of stack")
        worst = max(worst, shared)
        regs_max = max(regs_max, regs)
    return worst, regs_max


def _compile(fn):
    """Run fn() with launches captured; turn a Triton failure into an
    assertion that names the error instead of dumping MLIR."""
    with _aot.quiet_stderr() as errors, _aot.capture() as compiled:
        try:
            result = fn()
        except Exception as exc:  # Triton raises RuntimeError, etc.
            detail = "; ".join(errors[-3:])
            pytest.fail(f"sm_70 compile failed: {_aot.short_error(exc)}"
                        f"{' -- ' + detail if detail else ''}",
                        pytrace=False)
    return result, compiled


@pytest.mark.parametrize("model,tp", CASES,
                         ids=[f"{m.name}-tp{tp}" for m, tp in CASES])
def test_fused_moe_fp16(fm, tl, stats, record_property, model, tp):
    from vllm.platforms import current_platform  # noqa: F401
    record_property("ran_on", RAN_ON)
    configs = set()
    with _aot.capability(7, 0):
        for M in BATCHES:
            config, compiled = _compile(lambda: _launch_moe(
                fm, tl, M=M, E=model.experts, N=model.intermediate // tp,
                K=model.hidden, top_k=model.top_k))
            assert compiled, "no Triton launch was made"
            assert all(c.name == "fused_moe_kernel" for c in compiled)
            assert all(c.constexprs.get("dot_fp32") for c in compiled)
            shared, regs = _check(compiled, stats)
            configs.add((config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"],
                         config["BLOCK_SIZE_K"], config["num_warps"],
                         config["num_stages"], shared, regs))
    record_property(
        "forced_path", "sm_70 fused_moe_kernel fp32-dot: " + ", ".join(
            f"{m}x{n}x{k} w{w} s{s}" for m, n, k, w, s, *_ in sorted(configs)))
    record_property(
        "result", f"max shared {max(c[5] for c in configs)} B, "
        f"max regs {max(c[6] for c in configs)}, no spill")


def _wna16_group(intermediate: int, hidden: int, group: int) -> int:
    # MoeWNA16Method.create_weights halves the group size until both
    # sizes divide (min 32).
    while intermediate % group or hidden % group:
        group //= 2
    return group


@pytest.mark.parametrize("quant", ["int4_w4a16", "int8_w8a16"])
@pytest.mark.parametrize("model,tp", CASES,
                         ids=[f"{m.name}-tp{tp}" for m, tp in CASES])
def test_fused_moe_wna16(fm, tl, stats, record_property, monkeypatch, model,
                         tp, quant):
    """GPTQ int4/int8 MoE (--quantization moe_wna16, the path GPTQ MoE
    checkpoints take on a V100: Marlin needs sm_80, AWQ sm_75). Batches
    the CUDA moe_wna16_gemm kernel serves are counted, not compiled."""
    from vllm import _custom_ops as ops
    record_property("ran_on", RAN_ON)
    cuda_calls = []
    monkeypatch.setattr(ops, "moe_wna16_gemm",
                        lambda *a, **k: cuda_calls.append(1), raising=False)
    N = model.intermediate // tp
    group = _wna16_group(N, model.hidden, 128)
    tiles = set()
    with _aot.capability(7, 0):
        for M in BATCHES:
            _, compiled = _compile(lambda: _launch_moe(
                fm, tl, M=M, E=model.experts, N=N, K=model.hidden,
                top_k=model.top_k, quant=quant, group=group))
            assert all(c.name == "fused_moe_kernel_gptq_awq"
                       for c in compiled)
            assert all(c.constexprs.get("dot_fp32") for c in compiled)
            _check(compiled, stats)
            for c in compiled:
                k = c.constexprs
                tiles.add((k["BLOCK_SIZE_M"], k["BLOCK_SIZE_N"],
                           k["BLOCK_SIZE_K"], k["num_warps"],
                           k["num_stages"], stats["kernels"][
                               (c.name, c.kernel.hash)][0]))
    record_property(
        "forced_path", f"sm_70 gptq_awq fp32-dot group {group}: " +
        (", ".join(f"{m}x{n}x{k} w{w} s{s}"
                   for m, n, k, w, s, _ in sorted(tiles)) or "none") +
        f"; {len(cuda_calls)} launches to CUDA moe_wna16_gemm")
    record_property(
        "result",
        f"max shared {max((t[5] for t in tiles), default=0)} B, no spill")


_LARGEST = 6
_CUDA_CONFIG_KEYS = {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K",
                     "GROUP_SIZE_M", "num_warps", "num_stages"}


def test_tuning_file_configs_fit(fm, tl, stats, record_property,
                                 monkeypatch):
    """Every distinct tile config of the shipped tuning files, as the tree
    adapts it for sm_70, compiles and fits (proves the size estimate the
    patched config function uses is an upper bound)."""
    record_property("ran_on", RAN_ON)
    folder = Path(fm.__file__).parent / "configs"
    seen = {}
    for path in sorted(folder.glob("E=*.json")):
        if "dtype=" in path.name:
            continue
        for batch, config in json.loads(path.read_text()).items():
            if set(config) - _CUDA_CONFIG_KEYS:
                continue  # ROCm files (kpack, waves_per_eu, ...)
            seen.setdefault(json.dumps(config, sort_keys=True), int(batch))
    fitted = {}
    with _aot.capability(7, 0):
        for text in seen:
            monkeypatch.setattr(fm, "get_moe_configs",
                                lambda *a, _c=json.loads(text): {1: _c})
            picked = fm.try_get_optimal_moe_config((8, 512, 256),
                                                   (8, 256, 256), 2, None, 1)
            fitted[tuple(sorted(picked.items()))] = picked
        # The full sweep (~100 configs, minutes) runs on request; by
        # default the configs with the largest tiles, where the estimate
        # matters, are compiled.
        chosen = sorted(fitted.values(),
                        key=lambda c: -(c["BLOCK_SIZE_M"] * c["BLOCK_SIZE_K"]
                                        + c["BLOCK_SIZE_K"] * c["BLOCK_SIZE_N"]
                                        + c["BLOCK_SIZE_M"] *
                                        c["BLOCK_SIZE_N"]))
        if not os.environ.get("VLLM_VOLTA_AOT_FULL"):
            chosen = chosen[:_LARGEST]
        worst = 0
        for config in chosen:
            monkeypatch.setattr(fm, "get_moe_configs",
                                lambda *a, _c=config: {1: _c})
            # One GEMM stage is enough: the tiles decide shared memory.
            _, compiled = _compile(lambda: _launch_moe(
                fm, tl, M=256, E=8, N=256, K=256, top_k=2, stages=1))
            worst = max(worst, _check(compiled, stats, spill_free=False)[0])
    record_property(
        "forced_path",
        f"sm_70 fused_moe_kernel, {len(seen)} CUDA tuning-file configs -> "
        f"{len(fitted)} distinct after sm_70 fitting, {len(chosen)} largest "
        "compiled (VLLM_VOLTA_AOT_FULL=1: all)")
    record_property("result", f"max shared {worst} B")


PREFILL_CASES = [(d, bs, False) for d in (64, 96, 128, 256) for bs in (16, 32)
                 ] + [(d, 16, True) for d in (64, 96, 128, 256)]


@pytest.fixture(scope="module")
def pp(fm):
    return importlib.import_module("vllm.attention.ops.prefix_prefill")


@pytest.mark.parametrize("head_size,kv_block,alibi", PREFILL_CASES,
                         ids=[f"d{d}-kvblock{b}{'-alibi' if a else ''}"
                              for d, b, a in PREFILL_CASES])
def test_prefix_prefill(pp, stats, record_property, head_size, kv_block,
                        alibi):
    """context_attention_fwd: the xformers backend's prefill with prefix
    caching or chunked prefill (V0 turns chunked prefill on above 32K)."""
    import torch
    record_property("ran_on", RAN_ON)
    T, H, Hkv, batch, blocks = 512, 32, 8, 4, 64
    x = 8  # 16 bytes of fp16 per K-cache vector
    m = _meta
    i32 = torch.int32

    def launch():
        pp.context_attention_fwd(
            m(T, H, head_size), m(T, Hkv, head_size), m(T, Hkv, head_size),
            m(T, H, head_size), "auto",
            m(blocks, Hkv, head_size // x, kv_block, x),
            m(blocks, Hkv, head_size, kv_block), m(batch, 32, dtype=i32),
            m(batch + 1, dtype=i32), m(batch, dtype=i32), 1024, 256,
            m(1, dtype=torch.float32), m(1, dtype=torch.float32),
            alibi_slopes=m(H, dtype=torch.float32) if alibi else None)

    with _aot.capability(7, 0):
        _, compiled = _compile(launch)
    assert len(compiled) == 1
    (c, ) = compiled
    assert c.constexprs.get("DOT_FP32") is True
    # FMA dots keep a head-size row of the operands in registers: large
    # heads spill some (measured, reported), shared memory must fit.
    _check(compiled, stats, spill_free=False)
    shared, regs, stack = stats["kernels"][(c.name, c.kernel.hash)]
    k = c.constexprs
    record_property(
        "forced_path", f"sm_70 {c.name} DOT_FP32 BLOCK_M {k['BLOCK_M']} "
        f"BLOCK_N {k['BLOCK_N']} w{k['num_warps']}")
    record_property("result", f"shared {shared} B, {regs} regs, "
                    f"{stack} B stack")


@pytest.mark.parametrize("M", [16, 256])
def test_lora_punica(fm, stats, record_property, M):
    """--enable-lora: the punica shrink/expand kernels (hidden 4096, rank
    16, 4 LoRAs); shrink uses BLOCK_K 256 below 128 tokens."""
    import torch
    record_property("ran_on", RAN_ON)
    shrink = importlib.import_module(
        "vllm.lora.ops.triton_ops.lora_shrink_op")
    expand = importlib.import_module(
        "vllm.lora.ops.triton_ops.lora_expand_op")
    K, R, L = 4096, 16, 4
    i32, f32 = torch.int32, torch.float32
    meta = [_meta(M, dtype=i32), _meta(M, dtype=i32), _meta(L + 1, dtype=i32),
            _meta(L + 2, dtype=i32), _meta(L + 1, dtype=i32),
            torch.tensor([False])]

    def launch():
        shrink._lora_shrink(_meta(M, K), [_meta(L, R, K)],
                            _meta(1, M, R, dtype=f32), *meta, 1.0)
        expand._lora_expand(_meta(1, M, R, dtype=f32), [_meta(L, K, R)],
                            _meta(M, K), *meta, 0, True)

    with _aot.capability(7, 0):
        _, compiled = _compile(launch)
    assert [c.name for c in compiled] == ["_lora_shrink_kernel",
                                          "_lora_expand_kernel"]
    assert all(c.constexprs.get("DOT_FP32") for c in compiled)
    _check(compiled, stats, spill_free=False)
    record_property("forced_path", "sm_70 lora shrink+expand DOT_FP32")
    record_property("result", ", ".join(
        f"{c.name} {stats['kernels'][(c.name, c.kernel.hash)][0]} B "
        f"{stats['kernels'][(c.name, c.kernel.hash)][2]} B stack"
        for c in compiled))


# --- AWQ -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DenseModel:
    name: str
    hidden: int
    intermediate: int  # 0: no dense MLP (every layer is MoE)
    heads: int
    kv_heads: int
    head_dim: int = 128

    def layers(self, tp: int) -> list[tuple[str, int, int]]:
        """(name, K, N) of each quantized linear layer at tensor parallel
        size tp: column-parallel layers split N, row-parallel ones K."""
        qkv = (self.heads + 2 * self.kv_heads) * self.head_dim
        out = [("qkv_proj", self.hidden, qkv // tp),
               ("o_proj", self.heads * self.head_dim // tp, self.hidden)]
        if self.intermediate:
            out += [("gate_up_proj", self.hidden, 2 * self.intermediate // tp),
                    ("down_proj", self.intermediate // tp, self.hidden)]
        return out


AWQ_MODELS = [
    DenseModel("Qwen2.5-7B-AWQ", 3584, 18944, 28, 4),
    # Attention layers; the experts run on moe_wna16 (test_awq_moe_wna16).
    DenseModel("Qwen3-30B-A3B-AWQ", 2048, 0, 32, 4),
    # Llama-3.1-8B's layer shapes in AWQ form. Its compressed-tensors W4A16
    # form runs on the Exllama CUDA kernel on 7.0: no Triton kernel.
    DenseModel("Llama-3.1-8B", 4096, 14336, 32, 8),
]
AWQ_TPS = [1, 2]
# Around the provisional threshold (16 tokens) and up to 4096.
AWQ_BATCHES = [1, 2, 8, 16, 17, 32, 64, 256, 1024, 4096]
AWQ_CASES = [(m, tp) for m in AWQ_MODELS for tp in AWQ_TPS]
AWQ_GROUP = 128


@pytest.fixture(scope="module")
def awq(fm):
    return importlib.import_module(
        "vllm.model_executor.layers.quantization.awq")


def _launch_awq(awq, M, K, N):
    """AWQLinearMethod.apply, as the tree runs it, on meta tensors."""
    import torch
    method = awq.AWQLinearMethod(awq.AWQConfig(4, AWQ_GROUP, True))
    layer = torch.nn.Module()
    layer.qweight = _meta(K, N // 8, dtype=torch.int32)
    layer.qzeros = _meta(K // AWQ_GROUP, N // 8, dtype=torch.int32)
    layer.scales = _meta(K // AWQ_GROUP, N)
    out = method.apply(layer, _meta(M, K))
    assert tuple(out.shape) == (M, N) and out.dtype == torch.float16


def _awq_sweep(awq, stats, model, tp):
    seen = {}
    with _aot.capability(7, 0):
        for M in AWQ_BATCHES:
            for name, K, N in model.layers(tp):
                _, compiled = _compile(lambda: _launch_awq(awq, M, K, N))
                assert compiled, "no Triton launch was made"
                _check(compiled, stats)
                for c in compiled:
                    if c.name == "awq_gemm_kernel":
                        assert c.constexprs.get("DOT_FP32") is True
                    shared = stats["kernels"][(c.name, c.kernel.hash)][0]
                    key = (c.name, c.constexprs.get("BLOCK_SIZE_M"))
                    entry = seen.setdefault(key, {"M": set(), "shared": 0})
                    entry["M"].add(M)
                    entry["shared"] = max(entry["shared"], shared)
    return seen


def _awq_summary(seen) -> str:
    parts = []
    for (name, bm), entry in sorted(seen.items(), key=str):
        ms, shared = sorted(entry["M"]), entry["shared"]
        tile = f" BLOCK_M {bm}" if bm else ""
        parts.append(f"{name}{tile}: M {ms[0]}..{ms[-1]}, <= {shared} B")
    return "; ".join(parts)


@pytest.mark.parametrize("model,tp", AWQ_CASES,
                         ids=[f"{m.name}-tp{tp}" for m, tp in AWQ_CASES])
def test_awq_linear(awq, stats, record_property, model, tp):
    """AWQ linear layers as the patched tree dispatches them on 7.0: the
    fused awq_gemm_kernel (fp32 dot) up to AWQ_TRITON_GEMM_MAX_TOKENS
    tokens, awq_dequantize_kernel (+ an fp16 matmul) above."""
    record_property("ran_on", RAN_ON)
    seen = _awq_sweep(awq, stats, model, tp)
    limit = awq.AWQ_TRITON_GEMM_MAX_TOKENS
    gemm_m = {m for (name, _), v in seen.items() if name == "awq_gemm_kernel"
              for m in v["M"]}
    dequant_m = {m for (name, _), v in seen.items()
                 if name == "awq_dequantize_kernel" for m in v["M"]}
    assert gemm_m == {m for m in AWQ_BATCHES if m <= limit}
    assert dequant_m == {m for m in AWQ_BATCHES if m > limit}
    record_property("forced_path", f"sm_70 AWQ, threshold {limit} tokens")
    record_property("result", _awq_summary(seen))


@pytest.mark.parametrize("model,tp", AWQ_CASES,
                         ids=[f"{m.name}-tp{tp}" for m, tp in AWQ_CASES])
def test_awq_gemm_at_every_batch(awq, stats, record_property, monkeypatch,
                                 model, tp):
    """The fused kernel at every M (VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS=4096):
    whatever threshold the V100 measurement sets, its tiles fit."""
    record_property("ran_on", RAN_ON)
    monkeypatch.setenv("VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS", "4096")
    seen = _awq_sweep(awq, stats, model, tp)
    assert {name for name, _ in seen} == {"awq_gemm_kernel"}
    record_property("forced_path", "sm_70 awq_gemm_kernel DOT_FP32, "
                    "VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS=4096")
    record_property("result", _awq_summary(seen))


@pytest.mark.parametrize("tp", AWQ_TPS)
def test_awq_moe_wna16(fm, tl, stats, record_property, monkeypatch, tp):
    """Qwen3-30B-A3B-AWQ's experts: AWQ MoE layers take moe_wna16 on 7.0,
    int4 with zero points (AWQ's)."""
    from vllm import _custom_ops as ops
    record_property("ran_on", RAN_ON)
    cuda_calls = []
    monkeypatch.setattr(ops, "moe_wna16_gemm",
                        lambda *a, **k: cuda_calls.append(1), raising=False)
    model = MoEModel("Qwen3-30B-A3B-AWQ", 2048, 768, 128, 8)
    N = model.intermediate // tp
    group = _wna16_group(N, model.hidden, AWQ_GROUP)
    worst = 0
    with _aot.capability(7, 0):
        for M in BATCHES:
            _, compiled = _compile(lambda: _launch_moe(
                fm, tl, M=M, E=model.experts, N=N, K=model.hidden,
                top_k=model.top_k, quant="int4_w4a16", group=group,
                zero_points=True))
            assert all(c.name == "fused_moe_kernel_gptq_awq"
                       for c in compiled)
            assert all(c.constexprs.get("dot_fp32") and
                       c.constexprs.get("has_zp") for c in compiled)
            worst = max(worst, _check(compiled, stats)[0])
    record_property(
        "forced_path", f"sm_70 gptq_awq fp32-dot int4 with zero points, "
        f"group {group}; {len(cuda_calls)} launches to CUDA moe_wna16_gemm")
    record_property("result", f"max shared {worst} B, no spill")
