"""Time the two AWQ paths of a V100 next to an fp16 GEMM of the same shape.

Not a test: it prints figures, to set AWQ_TRITON_GEMM_MAX_TOKENS (awq.py,
provisional 16) from measurements. Needs a CUDA GPU, torch, Triton, rich
and pytest (the kernels are loaded by tests/kernels/test_quant_gpu.py's
loader, without vLLM). The Volta path is forced: the loaded awq_triton
module sees compute capability (7, 0), so awq_gemm_kernel runs with fp32
dot operands and fp32 split-K partial sums, as on a V100.

    VLLM_VOLTA_TREE=upstream python benchmarks/bench_awq.py [--markdown out.md]

Per shape (K inputs, N outputs, group 128) and M (tokens), median times
(triton.testing.do_bench) of:
- fp16: torch.matmul(x, W) with W fp16 [K, N] (cuBLAS, tensor cores);
- gemm: awq_gemm_triton (the fused Triton kernel, split-K 8, BLOCK_M 16 up
  to 16 tokens, 32 above: what AWQLinearMethod._apply_triton launches);
- deq+mm: awq_dequantize_triton then torch.matmul (the large-M path).

The V100 columns are a projection, not a measurement: each kernel is
assumed to reach on a V100 the fraction of its roofline it reached here.
Measured here: t, bytes moved B, FLOPs F (the fused kernel computes whole
BLOCK_M tiles, so F counts padded rows); the fraction is
f = max(B / t / BW, F / t / P) with this GPU's peaks; the projection is
max(B / (f BW_V100), F / (f P_V100)). Peaks: fp16 GEMMs on tensor cores
(V100 125 TFLOP/s, H200 ~989 dense), the fused kernel on fp32 FMA (its dot
has fp32 operands: V100 15.7, H200 67 TFLOP/s), memory 900 GB/s (V100
HBM2) and 4.8 TB/s (H200); deq+mm is projected as its two kernels'
projections added. Other GPUs: give --peak-bw/--peak-fp16/--peak-fp32.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

V100 = {"bw": 900e9, "fp16": 125e12, "fp32": 15.7e12}
H200 = {"bw": 4.8e12, "fp16": 989e12, "fp32": 67e12}

SHAPES = [
    # (name, K, N): Qwen2.5-7B-AWQ and Llama-3.1-8B layers at TP 1
    ("qwen2.5-7b qkv", 3584, 4608),
    ("qwen2.5-7b gate_up", 3584, 37888),
    ("qwen2.5-7b down", 18944, 3584),
    ("llama-3.1-8b o_proj", 4096, 4096),
]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
GROUP = 128
SPLIT_K = 8


def load(tree: Path):
    sys.path.insert(0, str(ROOT / "tests" / "kernels"))
    os.environ.setdefault("VLLM_VOLTA_TREE", str(tree))
    import test_quant_gpu
    kernels, _, _ = test_quant_gpu.load_awq(tree)
    kernels.current_platform.capability = (7, 0)  # the Volta path
    return kernels, test_quant_gpu


def block_m(M: int) -> int:
    # AWQLinearMethod._apply_triton's choice
    return 16 if M <= 16 else 32


def projection(t: float, bytes_: float, flops: float, peak_bw: float,
               peak_flops: float, v_bw: float, v_flops: float) -> float:
    fraction = max(bytes_ / t / peak_bw, flops / t / peak_flops)
    return max(bytes_ / (fraction * v_bw), flops / (fraction * v_flops))


_LAYERS: dict = {}


def measure(kernels, helpers, name: str, K: int, N: int, M: int, peaks):
    import torch
    from triton.testing import do_bench

    if (K, N) not in _LAYERS:
        _LAYERS.clear()  # one shape's weights at a time
        qweight, scales, qzeros, w = helpers.awq_layer(K, N, GROUP,
                                                       seed=K + N)
        _LAYERS[(K, N)] = (qweight, scales, qzeros, w.half())
        del w
    qweight, scales, qzeros, w16 = _LAYERS[(K, N)]
    x = torch.randn(M, K, device="cuda").half()
    bm = block_m(M)

    t_fp16 = do_bench(lambda: torch.matmul(x, w16)) * 1e-3
    t_gemm = do_bench(lambda: kernels.awq_gemm_triton(
        x, qweight, scales, qzeros, SPLIT_K, block_size_m=bm)) * 1e-3
    t_deq = do_bench(lambda: kernels.awq_dequantize_triton(
        qweight, scales, qzeros)) * 1e-3
    t_both = do_bench(lambda: torch.matmul(
        x, kernels.awq_dequantize_triton(qweight, scales, qzeros))) * 1e-3

    flops = 2.0 * M * N * K
    padded = 2.0 * (-(-M // bm) * bm) * N * K
    groups = K // GROUP
    b_fp16 = 2.0 * (M * K + K * N + M * N)
    b_quant = K * N / 2 + groups * N * 2 + groups * N / 2
    # x, the packed weights, fp32 partial sums written and read, output
    b_gemm = 2.0 * M * K + b_quant + 2 * 4.0 * SPLIT_K * M * N + 2.0 * M * N
    b_deq = b_quant + 2.0 * K * N

    def proj(t, b, f, kind):
        return projection(t, b, f, peaks["bw"], peaks[kind], V100["bw"],
                          V100[kind])

    t_mm = max(t_both - t_deq, 1e-9)
    v = {
        "fp16": proj(t_fp16, b_fp16, flops, "fp16"),
        "gemm": proj(t_gemm, b_gemm, padded, "fp32"),
        "deq+mm": proj(t_deq, b_deq, 0.0, "fp16") +
        proj(t_mm, b_fp16, flops, "fp16"),
    }
    return {"shape": name, "K": K, "N": N, "M": M,
            "fp16": t_fp16, "gemm": t_gemm, "deq+mm": t_both,
            "v100": v}


def _us(t: float) -> str:
    return f"{t * 1e6:.1f}"


COLUMNS = ["shape (K x N)", "M", "fp16 us", "gemm us", "deq+mm us",
           "faster AWQ", "projection V100 fp16 us", "projection V100 gemm us",
           "projection V100 deq+mm us", "projection faster AWQ"]


def rows(results):
    for r in results:
        here = "gemm" if r["gemm"] <= r["deq+mm"] else "deq+mm"
        v = r["v100"]
        there = "gemm" if v["gemm"] <= v["deq+mm"] else "deq+mm"
        yield [f"{r['shape']} ({r['K']}x{r['N']})", r["M"], _us(r["fp16"]),
               f"{_us(r['gemm'])} ({r['gemm'] / r['fp16']:.1f}x)",
               f"{_us(r['deq+mm'])} ({r['deq+mm'] / r['fp16']:.1f}x)", here,
               _us(v["fp16"]), _us(v["gemm"]), _us(v["deq+mm"]), there]


def crossover(results, key):
    """Per shape: the largest M at which the fused gemm is faster."""
    out = {}
    for r in results:
        t = r if key == "here" else r["v100"]
        if t["gemm"] <= t["deq+mm"]:
            out[r["shape"]] = max(out.get(r["shape"], 0), r["M"])
        else:
            out.setdefault(r["shape"], 0)
    return out


def markdown(results, device: str) -> str:
    lines = [f"# AWQ on the Volta path: measured on {device}, V100 projected",
             "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |"
              for row in rows(results)]
    lines += ["", "Largest M at which the fused gemm beats dequantize + "
              "matmul (measured / projection V100):", ""]
    here, there = crossover(results, "here"), crossover(results, "v100")
    lines += [f"- {s}: {here[s]} / {there[s]}" for s in here]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path,
                        default=Path(os.environ.get("VLLM_VOLTA_TREE",
                                                    ROOT / "upstream")))
    parser.add_argument("--markdown", type=Path, help="also write Markdown")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--peak-bw", type=float, default=H200["bw"])
    parser.add_argument("--peak-fp16", type=float, default=H200["fp16"])
    parser.add_argument("--peak-fp32", type=float, default=H200["fp32"])
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table
    if not torch.cuda.is_available():
        print("bench_awq: needs a CUDA GPU")
        return 2
    kernels, helpers = load(args.tree.resolve())
    peaks = {"bw": args.peak_bw, "fp16": args.peak_fp16,
             "fp32": args.peak_fp32}
    device = torch.cuda.get_device_name()
    results = [measure(kernels, helpers, name, K, N, int(M), peaks)
               for name, K, N in SHAPES
               for M in args.batches.split(",")]
    table = Table(title=f"AWQ, Volta path forced, measured on {device}; "
                  "V100 columns are a projection", title_justify="left")
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    for row in rows(results):
        table.add_row(*map(str, row))
    console = Console(width=220)
    console.print(table)
    here, there = crossover(results, "here"), crossover(results, "v100")
    for shape in here:
        console.print(f"{shape}: fused gemm faster up to M = {here[shape]} "
                      f"(measured), {there[shape]} (projection V100)")
    if args.markdown:
        args.markdown.write_text(markdown(results, device))
        console.print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
