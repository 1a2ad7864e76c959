"""Prefill attention per layer on a CUDA GPU, Volta path: three ways, one run.

For each batch shape (prompts x tokens) and head layout, one layer's prefill
attention of the TORCH_SDPA backend is timed:

- ``loop``: ``forward_prefill_sdpa``, one SDPA call per sequence (the route
  the backend had before the one-launch prefill; it stays for ALiBi and
  soft-capped layers), SDPA limited to its memory-efficient kernel (what an
  SM 7.0 GPU has);
- ``one launch``: the backend's forward (prefill only) of one layer, with
  the step's plan already made (the engine makes it at the first layer of
  a step and every layer reuses it); ``plan`` is what making it costs once
  per step (host work and its host-to-device copies);
- ``bare kernel``: ``torch.ops.aten._efficient_attention_forward`` called
  once on inputs already laid out for it (K/V with as many heads as Q),
  the floor for the other two.

The V100 column is a projection, not a measurement: the bare kernel's
achieved fraction of this GPU's fp16 tensor peak applied to the V100's
125 TFLOP/s, times the measured ratio of the one-launch route to the bare
kernel. ``nox -s bench`` runs this natively on a V100 host.

    python benchmarks/bench_prefill.py [--markdown FILE] [--repeat 20]

Needs the tree's vllm importable (PYTHONPATH or VLLM_VOLTA_TREE) and a GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
TREE = Path(os.environ.get("VLLM_VOLTA_TREE") or ROOT / "upstream")
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))

SHAPES = [(256, 32), (64, 512), (8, 2048), (1, 8192)]
HEADS = [("GQA 32/8", 32, 8), ("MHA 32/32", 32, 32)]
HEAD_SIZE = 128
# Dense fp16 tensor-core peaks (TFLOP/s) used for the projection.
PEAK = {"H200": 989.0, "H100": 989.0, "V100": 125.0}


def _time(fn, repeat: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat * 1e3


def _flops(prompts: int, tokens: int, heads: int) -> float:
    # QK^T and PV, causal: half of 4 * L^2 * d per head.
    return prompts * heads * 2.0 * tokens * tokens * HEAD_SIZE


def _metadata(backend, prompts: int, tokens: int, device):
    lens = [tokens] * prompts
    starts = torch.arange(0, (prompts + 1) * tokens, tokens,
                          dtype=torch.int32, device=device)
    return backend.TorchSDPACudaMetadata(
        num_prefills=prompts,
        num_prefill_tokens=prompts * tokens,
        num_decode_tokens=0,
        slot_mapping=torch.empty(0, dtype=torch.long, device=device),
        multi_modal_placeholder_index_maps={},
        enable_kv_scales_calculation=True,
        seq_lens=lens,
        seq_lens_tensor=torch.tensor(lens, dtype=torch.int32, device=device),
        max_query_len=tokens,
        max_prefill_seq_len=tokens,
        max_decode_seq_len=0,
        query_start_loc=starts,
        seq_start_loc=starts,
        context_lens_tensor=torch.zeros(prompts, dtype=torch.int32,
                                        device=device),
        block_tables=torch.empty(0, 0, dtype=torch.int32, device=device),
        use_cuda_graph=False,
        query_lens=lens)


class _Layer:

    def __init__(self, device):
        self._k_scale = torch.ones((), device=device)
        self._v_scale = torch.ones((), device=device)


def measure(repeat: int):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vllm.attention.backends import torch_sdpa_cuda as backend
    device = torch.device("cuda")
    layer = _Layer(device)
    scale = HEAD_SIZE**-0.5
    rows = []
    for label, heads, kv_heads in HEADS:
        impl = backend.TorchSDPACudaImpl(heads, HEAD_SIZE, scale, kv_heads,
                                         None, None, "auto")
        for prompts, tokens in SHAPES:
            n = prompts * tokens
            q = torch.randn(n, heads, HEAD_SIZE, dtype=torch.half,
                            device=device)
            k = torch.randn(n, kv_heads, HEAD_SIZE, dtype=torch.half,
                            device=device)
            v = torch.randn_like(k)
            out = torch.empty_like(q)
            lens = [tokens] * prompts

            def loop():
                with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
                    backend.forward_prefill_sdpa(out, q, k, v, lens, lens,
                                                 scale, True)

            meta = _metadata(backend, prompts, tokens, device)

            def one_launch():
                impl.forward(layer, q.flatten(1), k.flatten(1), v.flatten(1),
                             torch.empty(0, device=device), meta)

            def plan():
                fresh = _metadata(backend, prompts, tokens, device)
                backend.varlen.plan_causal(
                    fresh.prefill_metadata.prefill_query_lens(),
                    [0] * prompts, None, None, 0, 1 << 30, device)

            group = heads // kv_heads
            k_full = k.repeat_interleave(group, dim=1)[None]
            v_full = v.repeat_interleave(group, dim=1)[None]
            cu = torch.arange(0, n + 1, tokens, dtype=torch.int32,
                              device=device)

            def bare():
                torch.ops.aten._efficient_attention_forward(
                    q[None], k_full, v_full, None, cu, cu, tokens, tokens,
                    0.0, 1, False, scale=scale)

            t_loop = _time(loop, repeat)
            t_new = _time(one_launch, repeat)
            t_bare = _time(bare, repeat)
            t_plan = _time(plan, repeat)
            rows.append(
                dict(heads=label, shape=f"{prompts} x {tokens}", loop=t_loop,
                     new=t_new, bare=t_bare, plan=t_plan,
                     tflops=_flops(prompts, tokens, heads) / t_bare / 1e9))
            del q, k, v, out, k_full, v_full
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_prefill: needs a CUDA GPU; run it on a GPU host "
              "(nox -s bench on a V100)", file=sys.stderr)
        return 2
    from vllm_volta import report
    gpu = torch.cuda.get_device_name()
    key = next((name for name in PEAK if name in gpu), None)
    rows = measure(args.repeat)
    columns = [
        "heads", "prompts x tokens", "loop (ms)", "one launch (ms)",
        "bare kernel (ms)", "plan (ms, per step)", "one launch / bare", "loop / one launch",
        "bare TFLOP/s", "V100 one launch (ms, projection)"
    ]
    table = []
    for r in rows:
        projected = "-"
        if key is not None:
            fraction = r["tflops"] / PEAK[key]
            v100_bare = (r["tflops"] * r["bare"]) / (fraction *
                                                     PEAK["V100"])
            projected = f"{v100_bare * r['new'] / r['bare']:.2f}"
        table.append([
            r["heads"], r["shape"], f"{r['loop']:.3f}", f"{r['new']:.3f}",
            f"{r['bare']:.3f}", f"{r['plan']:.3f}",
            f"{r['new'] / r['bare']:.2f}",
            f"{r['loop'] / r['new']:.1f}", f"{r['tflops']:.0f}", projected
        ])
    title = (f"Prefill attention per layer, fp16, head size {HEAD_SIZE}, "
             f"{gpu}, torch {torch.__version__}")
    report.show(title, columns, table)
    worst = max(r["new"] / r["bare"] for r in rows)
    print(f"worst one launch / bare kernel: {worst:.2f} (goal <= 1.25)")
    if args.markdown:
        args.markdown.write_text(f"{title}\n\n" +
                                 report.markdown(columns, table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
