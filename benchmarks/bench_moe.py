"""One fused-MoE layer of the patched vLLM tree, three ways, on this GPU.

Not a test: it prints figures. Per model shape and batch size M:

- ``triton fp32-dot``: the Volta path of patch 0008 (capability forced to
  7.0, the tensor-core threshold raised out of reach): the Triton kernel
  with fp32 dot operands, i.e. FMA units;
- ``tensor cores``: the Volta prefill path (capability 7.0, threshold 1):
  per-expert fp16 torch.mm (cuBLAS);
- ``sm_90 (upstream)``: capability 9.0, the unpatched fp16 tl.dot Triton
  kernel with vLLM's own configs (for scale; cannot run on a V100);

then the decode tile sweep (the Volta Triton path at M 1..64 with
BLOCK_SIZE_K 32/64/128 over a few M/N tiles). Each figure is the median
of timed calls of vLLM's ``fused_experts_impl`` (routing from a softmax
over random logits), with TFLOP/s and the speedup of the tensor-core
path. The V100 columns are a *projection*, not a measurement: each
path's measured fraction of its H200 roofline applied to the V100
roofline (900 GB/s; 125 TFLOP/s fp16 tensor cores; 15.7 TFLOP/s fp32
FMA). Both suggest a VOLTA_MOE_TC_MIN_TOKENS.

On the lent GPU (no V100 at hand), from a checkout with ``nox -s apply``:

    python benchmarks/bench_moe.py [--markdown FILE] [--ops LIB]

vLLM comes from the tree (VLLM_VOLTA_TREE, default upstream/), its ops
from tests/support/vllm_ops (built from the tree's csrc/ into --ops-dir
unless --ops or VLLM_VOLTA_OPS_EXT names a built library). ``--dry``:
tiny shapes, a few calls; on a machine without CUDA only the tensor-core
column runs (on CPU, activation ops from tests/support/moe_cpu_ops.py),
which exercises the plumbing (CI: tests/unit/test_bench_moe.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "tests" / "support" / "volta_site"


@dataclass(frozen=True)
class Shape:
    name: str
    experts: int
    top_k: int
    hidden: int
    inter: int  # per-expert intermediate size (after TP)


SHAPES = [
    Shape("Mixtral-8x7B TP1", 8, 2, 4096, 14336),
    Shape("Mixtral-8x7B TP4", 8, 2, 4096, 14336 // 4),
    Shape("Qwen3-30B-A3B TP1", 128, 8, 2048, 768),
]
DRY_SHAPES = [
    Shape("tiny E8 top2", 8, 2, 128, 256),
    Shape("tiny E16 top4", 16, 4, 64, 96),
]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
DRY_BATCHES = [1, 4, 64, 256]
DECODE_BATCHES = [1, 2, 4, 8, 16, 32, 64]
DECODE_K = [32, 64, 128]
DECODE_MN = [(16, 32), (16, 64), (32, 64), (64, 64)]


@dataclass(frozen=True)
class Gpu:
    name: str
    bandwidth: float  # bytes/s
    fp16_tensor: float  # FLOP/s, dense
    fp32_fma: float  # FLOP/s


V100 = Gpu("V100", 900e9, 125e12, 15.7e12)
H200 = Gpu("H200", 4.8e12, 989e12, 67e12)
H100 = Gpu("H100", 3.35e12, 989e12, 67e12)

PATHS = ("triton fp32-dot", "tensor cores", "sm_90 (upstream)")


def _peak(gpu: Gpu, path: str) -> float:
    return gpu.fp32_fma if path == "triton fp32-dot" else gpu.fp16_tensor


def measured_gpu(name: str) -> Gpu | None:
    for gpu in (H200, H100):
        if gpu.name in name:
            return gpu
    return None


# --------------------------------------------------------------------------
# vLLM from the tree, its ops, the platform


def setup(tree: Path, ops: str | None, ops_dir: Path, device: str):
    """Import the tree's fused_moe with the ops it calls; return it."""
    import torch

    # ROOT first: the tree has a `tests` package of its own.
    sys.path[:0] = [str(ROOT), str(tree), str(ROOT / "src")]
    if device == "cuda":
        from tests.support.vllm_ops import build
        if ops:
            os.environ["VLLM_VOLTA_OPS_EXT"] = ops
        path, seconds = build.load_ops(tree / "csrc", ops_dir)
        print(f"vLLM ops: {path} ({seconds:.0f} s)", flush=True)
        sys.path.insert(0, str(SITE))
        import volta_reference_ops
        volta_reference_ops.register()
        # vLLM picks its CUDA platform from its installed metadata.
        dist = Path(tempfile.mkdtemp(prefix="bench_moe_dist_"))
        meta = dist / "vllm-0.9.2.dist-info"
        meta.mkdir()
        (meta / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: vllm\nVersion: 0.9.2\n")
        sys.path.append(str(dist))
    else:
        from tests.support import moe_cpu_ops
        moe_cpu_ops.register()
    for stand_in in ("vllm._C", "vllm._moe_C"):
        sys.modules.setdefault(stand_in, types.ModuleType(stand_in))
    fm = importlib.import_module(
        "vllm.model_executor.layers.fused_moe.fused_moe")
    if not hasattr(fm.tl, "float16"):
        # No Triton (CPU, --dry): fused_experts_impl names its compute type
        # before it picks a path; only the tensor-core path runs here.
        fm.tl = types.SimpleNamespace(float16="fp16", bfloat16="bf16",
                                      float32="fp32")
    if device == "cuda" and not fm.current_platform.is_cuda():
        raise SystemExit(f"vLLM did not pick its CUDA platform from {tree}")
    del torch
    return fm


@contextlib.contextmanager
def forced(fm, capability: tuple[int, int], tc_min_tokens: int | None):
    """The platform reports `capability` (a V100's name on 7.x), and
    VLLM_VOLTA_MOE_TC_MIN_TOKENS is `tc_min_tokens` unless that is None."""
    from vllm.platforms.interface import DeviceCapability, PlatformEnum

    cls = type(fm.current_platform)
    saved = {k: cls.__dict__.get(k)
             for k in ("_enum", "get_device_capability", "get_device_name")}
    saved_env = os.environ.get("VLLM_VOLTA_MOE_TC_MIN_TOKENS")
    cap = DeviceCapability(*capability)
    cls.get_device_capability = classmethod(lambda c, device_id=0: cap)
    if not fm.current_platform.is_cuda():  # CPU (--dry): a CUDA stand-in
        cls._enum = PlatformEnum.CUDA
        cls.get_device_name = classmethod(lambda c, device_id=0: "cpu")
    if capability[0] == 7:
        # The tuning-file lookup goes by device name: a V100 finds none
        # (vLLM 0.9.2 ships no V100 file), this GPU may find its own.
        cls.get_device_name = classmethod(
            lambda c, device_id=0: "Tesla V100-SXM2-32GB")
    fm.get_moe_configs.cache_clear()  # cached by shape, not device name
    if tc_min_tokens is not None:  # None: as the environment says
        os.environ["VLLM_VOLTA_MOE_TC_MIN_TOKENS"] = str(tc_min_tokens)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                if key in cls.__dict__:
                    delattr(cls, key)
            else:
                setattr(cls, key, value)
        fm.get_moe_configs.cache_clear()
        if saved_env is None:
            os.environ.pop("VLLM_VOLTA_MOE_TC_MIN_TOKENS", None)
        else:
            os.environ["VLLM_VOLTA_MOE_TC_MIN_TOKENS"] = saved_env


# --------------------------------------------------------------------------
# One layer


class Layer:

    def __init__(self, shape: Shape, device: str, seed: int = 0):
        import torch
        g = torch.Generator(device=device).manual_seed(seed)
        e, h, n = shape.experts, shape.hidden, shape.inter
        self.shape = shape
        self.device = device
        self.w1 = (torch.randn(e, 2 * n, h, device=device, generator=g) /
                   math.sqrt(h)).half()
        self.w2 = (torch.randn(e, h, n, device=device, generator=g) /
                   math.sqrt(n)).half()
        self.generator = g

    def inputs(self, M: int):
        import torch
        s = self.shape
        x = torch.randn(M, s.hidden, device=self.device,
                        generator=self.generator).half()
        logits = torch.randn(M, s.experts, device=self.device,
                             generator=self.generator)
        weights, ids = torch.softmax(logits, dim=-1).topk(s.top_k, dim=-1)
        return x, weights.contiguous(), ids.to(torch.int32)

    def flops(self, M: int) -> float:
        s = self.shape
        return 2.0 * M * s.top_k * 3 * s.hidden * s.inter

    def bytes(self, M: int, topk_ids) -> float:
        """Weights of the experts the batch touches, read once, plus the
        activations: x, each intermediate written and read once, output."""
        s = self.shape
        active = topk_ids.unique().numel()
        weights = active * 3 * s.hidden * s.inter * 2
        slots = M * s.top_k
        acts = (2 * M * s.hidden + slots *
                (2 * 2 * s.inter + 2 * s.inter + 2 * s.hidden)) * 2
        return float(weights + acts)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def time_call(fn, device: str, calls: int, budget_s: float) -> float:
    """Median seconds of one call, after two warm-up calls (compiles)."""
    for _ in range(2):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < calls:
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        if len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def run_path(fm, layer: Layer, path: str, x, weights, ids):
    capability = (9, 0) if path == "sm_90 (upstream)" else (7, 0)
    tc = 1 if path == "tensor cores" else 1 << 30

    def call():
        return fm.fused_experts_impl(x, layer.w1, layer.w2, weights, ids,
                                     False)

    return capability, tc, call


def bench_shape(fm, layer: Layer, batches, paths, device, calls, budget):
    rows = []
    for M in batches:
        x, weights, ids = layer.inputs(M)
        row = {"M": M, "flops": layer.flops(M),
               "bytes": layer.bytes(M, ids), "t": {}}
        outs = {}
        for path in paths:
            capability, tc, call = run_path(fm, layer, path, x, weights,
                                            ids)
            with forced(fm, capability, tc):
                outs[path] = call().float()
                row["t"][path] = time_call(call, device, calls, budget)
        if PATHS[0] in outs:
            # The tensor-core output against the fp32-dot one: max over
            # tokens of max|diff| / rms of the token's row.
            ref = outs[PATHS[0]]
            rms = ref.pow(2).mean(dim=-1).sqrt().clamp_min(1e-30)
            row["err"] = ((outs[PATHS[1]] - ref).abs().amax(dim=-1) /
                          rms).max().item()
        rows.append(row)
        print(f"  {layer.shape.name} M={M}: " + ", ".join(
            f"{p} {row['t'][p] * 1e6:.0f} us" for p in row["t"]),
              flush=True)
    return rows


def bench_decode(fm, layer: Layer, batches, device, calls, budget):
    """The Volta Triton path at decode sizes with each tile, exactly as
    given (try_get_optimal_moe_config bypassed), against the tile the
    tree picks (its default)."""
    import torch
    tiles = [{"BLOCK_SIZE_M": m, "BLOCK_SIZE_N": n, "BLOCK_SIZE_K": k,
              "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 1}
             for m, n in DECODE_MN for k in DECODE_K]
    rows = []
    original = fm.try_get_optimal_moe_config
    for M in batches:
        x, weights, ids = layer.inputs(M)
        with forced(fm, (7, 0), 1 << 30):
            picked = original(layer.w1.size(), layer.w2.size(),
                              layer.shape.top_k, None, M)
            call = lambda: fm.fused_experts_impl(  # noqa: E731
                x, layer.w1, layer.w2, weights, ids, False)
            ref = call()
            t_picked = time_call(call, device, calls, budget)
            row = {"M": M, "picked": picked, "t_picked": t_picked,
                   "bytes": layer.bytes(M, ids), "t": {}, "diff": {}}
            for tile in tiles:
                fm.try_get_optimal_moe_config = (
                    lambda *a, tile=tile, **k: dict(tile))
                try:
                    row["diff"][_tile(tile)] = (
                        call().float() - ref.float()).abs().max().item()
                    row["t"][_tile(tile)] = time_call(call, device, calls,
                                                      budget)
                finally:
                    fm.try_get_optimal_moe_config = original
        rows.append(row)
        best = min(row["t"], key=row["t"].get)
        print(f"  decode {layer.shape.name} M={M}: picked "
              f"{_tile(picked)} {t_picked * 1e6:.0f} us, best {best} "
              f"{row['t'][best] * 1e6:.0f} us", flush=True)
    del torch
    return rows


def _tile(config: dict) -> str:
    return (f"{config['BLOCK_SIZE_M']}x{config['BLOCK_SIZE_N']}x"
            f"{config['BLOCK_SIZE_K']}")


# --------------------------------------------------------------------------
# Tables


def roofline(gpu: Gpu, path: str, flops: float, nbytes: float) -> float:
    return max(nbytes / gpu.bandwidth, flops / _peak(gpu, path))


def projection(gpu: Gpu | None, path: str, flops, nbytes, t) -> float | None:
    """V100 seconds: the V100 roofline over the fraction of the measured
    GPU's roofline this path reached."""
    if gpu is None or t is None or path == "sm_90 (upstream)":
        return None
    fraction = roofline(gpu, path, flops, nbytes) / t
    return roofline(V100, path, flops, nbytes) / fraction


def _us(t) -> str:
    return "-" if t is None else f"{t * 1e6:,.0f}"


def _tf(flops, t) -> str:
    return "-" if t is None else f"{flops / t / 1e12:.1f}"


def _x(a, b) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def threshold(rows, slow, fast) -> int | None:
    """Smallest M from which `fast` beats `slow` at every larger M."""
    best = None
    for row in reversed(rows):
        a, b = slow(row), fast(row)
        if a is None or b is None or b >= a:
            break
        best = row["M"]
    return best


MAIN_COLUMNS = ["M", "triton fp32-dot us", "TFLOP/s", "tensor cores us",
                "TFLOP/s", "speedup", "sm_90 upstream us", "TFLOP/s",
                "7.0 picks", "V100 projection: triton us",
                "V100 projection: tensor cores us",
                "V100 projection: speedup", "tc vs fp32-dot err"]


def main_rows(rows, gpu: Gpu | None, tc_min: int):
    out = []
    for row in rows:
        t = row["t"]
        f, b = row["flops"], row["bytes"]
        tri, tc, up = (t.get(p) for p in PATHS)
        p_tri = projection(gpu, PATHS[0], f, b, tri)
        p_tc = projection(gpu, PATHS[1], f, b, tc)
        out.append([row["M"], _us(tri), _tf(f, tri), _us(tc), _tf(f, tc),
                    _x(tri, tc), _us(up), _tf(f, up),
                    "tensor cores" if row["M"] >= tc_min else "triton",
                    _us(p_tri), _us(p_tc), _x(p_tri, p_tc),
                    f"{row['err']:.1e}" if "err" in row else "-"])
    return out


def decode_columns():
    return (["M", "tree picks", "us"] +
            [f"{m}x{n}x{k}" for m, n in DECODE_MN for k in DECODE_K] +
            ["best", "max|diff| vs picked"])


def decode_rows(rows):
    out = []
    for row in rows:
        best = min(row["t"], key=row["t"].get)
        out.append([row["M"], _tile(row["picked"]), _us(row["t_picked"])] +
                   [_us(row["t"][k]) for k in row["t"]] +
                   [best, f"{max(row['diff'].values()):.2e}"])
    return out


def render(title, columns, rows, markdown_parts):
    try:
        from vllm_volta import report
        report.show(title, columns, rows)
    except ImportError:  # no rich on this machine: Markdown on stdout
        print(f"\n{title}\n")
        print(_markdown(columns, rows))
    markdown_parts.append(f"### {title}\n\n{_markdown(columns, rows)}")


def _markdown(columns, rows) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path,
                        default=Path(os.environ.get("VLLM_VOLTA_TREE")
                                     or ROOT / "upstream"))
    parser.add_argument("--ops", help="a built vLLM ops library "
                        "(tests/support/vllm_ops); default: build it")
    parser.add_argument("--ops-dir", type=Path,
                        default=ROOT / ".bench-moe" / "ops",
                        help="where the ops library is built (default in "
                        ".bench-moe/, git-ignored: a device run keeps it)")
    parser.add_argument("--markdown", type=Path,
                        help="also write the tables as Markdown here")
    parser.add_argument("--calls", type=int, default=20,
                        help="timed calls per point (at most)")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="seconds per point after which timing stops "
                        "(at least 3 calls)")
    parser.add_argument("--shapes", help="comma-separated indexes into "
                        f"{[s.name for s in SHAPES]}")
    parser.add_argument("--no-decode", action="store_true",
                        help="skip the decode tile sweep")
    parser.add_argument("--dry", action="store_true",
                        help="tiny shapes and few calls (CPU or GPU)")
    args = parser.parse_args(argv)
    # Triton's compiled kernels next to the ops, kept between device runs.
    os.environ.setdefault("TRITON_CACHE_DIR",
                          str(ROOT / ".bench-moe" / "triton"))

    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tree = args.tree if args.tree.is_absolute() else (ROOT / args.tree)
    if not (tree / "vllm" / "__init__.py").is_file():
        raise SystemExit(f"no vLLM tree at {tree}: run `nox -s apply`")
    if device == "cpu" and not args.dry:
        raise SystemExit("no CUDA GPU: only --dry runs here")
    fm = setup(tree.resolve(), args.ops, args.ops_dir.resolve(), device)

    shapes = DRY_SHAPES if args.dry else SHAPES
    if args.shapes:
        shapes = [shapes[int(i)] for i in args.shapes.split(",")]
    batches = DRY_BATCHES if args.dry else BATCHES
    calls = 3 if args.dry else args.calls
    paths = PATHS if device == "cuda" else (PATHS[1], )
    gpu_name = (torch.cuda.get_device_name() if device == "cuda" else
                "CPU (no GPU: tensor-core path only)")
    gpu = measured_gpu(gpu_name) if device == "cuda" else None
    with forced(fm, (7, 0), None):
        tc_min = fm.volta_moe_tc_min_tokens()

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        "## Fused MoE on the Volta path (`python benchmarks/bench_moe.py"
        + (" --dry" if args.dry else "") + "`)\n",
        f"{gpu_name}, torch {torch.__version__}, "
        f"triton {_version('triton')}, {started}. Median of up to {calls} "
        "calls of the tree's `fused_experts_impl` per point, fp16, routing "
        "from a softmax over random logits. `triton fp32-dot`: capability "
        "forced to 7.0, tensor-core threshold out of reach; `tensor "
        "cores`: 7.0, threshold 1; `sm_90 (upstream)`: capability 9.0 "
        "(vLLM's fp16 tl.dot kernel, not a V100 path). `tc vs fp32-dot "
        "err`: max over tokens of max|difference| / rms of the token's "
        "fp32-dot output row (fp16 roundings only). `7.0 picks`: what "
        f"the tree runs at 7.0 with VOLTA_MOE_TC_MIN_TOKENS = {tc_min}. "
        "V100 columns are a **projection**, not a measurement: each "
        "path's measured fraction of its "
        f"{gpu.name if gpu else '(unknown GPU)'} roofline "
        "(bandwidth, fp16 tensor or fp32 FMA peak) applied to the V100 "
        "roofline (900 GB/s, 125 / 15.7 TFLOP/s).\n",
    ]
    if gpu is None and device == "cuda":
        print(f"no roofline figures for {gpu_name}: no V100 projection")
    print(f"{gpu_name}: {len(shapes)} shapes, M {batches}", flush=True)
    suggestions = []
    for shape in shapes:
        layer = Layer(shape, device)
        rows = bench_shape(fm, layer, batches, paths, device, calls,
                           args.budget)
        render(f"{shape.name}: E {shape.experts}, top-{shape.top_k}, "
               f"hidden {shape.hidden}, inter {shape.inter}", MAIN_COLUMNS,
               main_rows(rows, gpu, tc_min), parts)
        measured = threshold(rows, lambda r: r["t"].get(PATHS[0]),
                             lambda r: r["t"].get(PATHS[1]))
        projected = threshold(
            rows, lambda r: projection(gpu, PATHS[0], r["flops"],
                                       r["bytes"], r["t"].get(PATHS[0])),
            lambda r: projection(gpu, PATHS[1], r["flops"], r["bytes"],
                                 r["t"].get(PATHS[1])))
        suggestions.append([shape.name, measured or "-", projected or "-"])
        if device == "cuda" and not args.no_decode:
            drows = bench_decode(
                fm, layer, [m for m in DECODE_BATCHES if m <= max(batches)],
                device, calls, args.budget)
            render(f"{shape.name}: decode tiles, Volta Triton path "
                   "(us per call)", decode_columns(), decode_rows(drows),
                   parts)
        del layer
        if device == "cuda":
            torch.cuda.empty_cache()
    render("Tensor-core threshold: smallest M from which the tensor-core "
           "path is faster at every larger M",
           ["shape", "measured here", "V100 projection"], suggestions,
           parts)
    if args.markdown:
        args.markdown.write_text("\n".join(parts))
        print(f"Markdown: {args.markdown}")
    return 0


def _version(name: str) -> str:
    try:
        return __import__(name).__version__
    except ImportError:
        return "-"


if __name__ == "__main__":
    sys.exit(main())
