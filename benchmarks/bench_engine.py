"""Engine throughput on a CUDA GPU, Volta path, before and after: one run.

A Llama-3.1-8B-shaped model (hidden 4096, 32 query / 8 KV heads of 128,
MLP 14336, vocabulary of the tiny test tokenizer, a few layers, random
weights) served by the V0 engine of the tree. Two loads:

- prefill-heavy: 256 prompts x 128 tokens, one new token each
  (prompt tokens/s);
- decode-heavy: 64 sequences of 16 prompt tokens x 512 new tokens
  (generated tokens/s), CUDA graphs on.

Each route runs in its own process, in the same run:

- ``before``: the TORCH_SDPA prefill as it was before the one-launch
  patch (one SDPA call per sequence: ``forward_prefill_sdpa``, the route the
  backend keeps for ALiBi and soft caps);
- ``after``: the tree as it is.

With ``--moe`` a Mixtral-shaped model (8 experts, top 2) is added; its
``before`` keeps the Triton fp32-dot MoE kernel at every batch size
(VLLM_VOLTA_MOE_TC_MIN_TOKENS set past any batch), where the tree has the
tensor-core MoE route; without that route the two rows are the same code.

On a GPU other than a V100 the Volta path is forced as in the engine proof
(tests/engine/drive.py: capability 7.0, vLLM's ops built from csrc/), and
the figures are H200 figures of the Volta code path, not V100 figures.

    python benchmarks/bench_engine.py --out DIR [--layers 4] [--moe]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

PREFILL = (256, 128)          # prompts x prompt tokens, 1 new token
DECODE = (64, 16, 512)        # sequences x prompt tokens x new tokens
NO_TENSOR_CORE_MOE = str(1 << 30)


def make_model(root: Path, name: str, layers: int, moe: bool) -> Path:
    """Random weights of the real shapes, saved with the tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, MixtralConfig

    from tests.support import tiny_tokenizer as tt
    directory = root / name
    if (directory / "config.json").is_file():
        return directory
    common = dict(vocab_size=tt.VOCAB_SIZE, hidden_size=4096,
                  intermediate_size=14336, num_hidden_layers=layers,
                  num_attention_heads=32, num_key_value_heads=8,
                  head_dim=128, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, initializer_range=0.02,
                  tie_word_embeddings=False, pad_token_id=tt.PAD,
                  bos_token_id=tt.BOS, eos_token_id=tt.EOS,
                  torch_dtype="float16")
    if moe:
        config = MixtralConfig(num_local_experts=8, num_experts_per_tok=2,
                               sliding_window=None, **common)
        from transformers import MixtralForCausalLM as cls
    else:
        config = LlamaConfig(**common)
        from transformers import LlamaForCausalLM as cls
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = cls(config).to(torch.float16)
    directory.mkdir(parents=True)
    model.save_pretrained(directory, safe_serialization=True)
    tt.save(directory)
    return directory


def worker(model_dir: Path, route: str, out: Path) -> None:
    import random

    import torch
    from vllm import LLM, SamplingParams

    if route == "before":
        from vllm.attention.backends import torch_sdpa_cuda
        impl = torch_sdpa_cuda.TorchSDPACudaImpl
        if hasattr(impl, "_prefill_in_one_launch"):
            impl._prefill_in_one_launch = lambda self, window: False
    llm = LLM(model=str(model_dir), tokenizer=str(model_dir), dtype="float16",
              max_model_len=1024, max_num_seqs=256,
              max_num_batched_tokens=PREFILL[0] * PREFILL[1],
              enable_chunked_prefill=False, enable_prefix_caching=False,
              gpu_memory_utilization=0.5, num_gpu_blocks_override=4096,
              swap_space=1, seed=0)
    rnd = random.Random(0)

    def prompts(n, length):
        return [{"prompt_token_ids": [rnd.randrange(8, 500)
                                      for _ in range(length)]}
                for _ in range(n)]

    def timed(batch, params):
        llm.generate(batch[:4], params, use_tqdm=False)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        torch.cuda.synchronize()
        return outs, time.perf_counter() - start

    n, length = PREFILL
    _, seconds = timed(prompts(n, length),
                       SamplingParams(max_tokens=1, ignore_eos=True))
    prefill = n * length / seconds
    n, length, new = DECODE
    outs, seconds = timed(prompts(n, length),
                          SamplingParams(max_tokens=new, ignore_eos=True))
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    out.write_text(json.dumps(dict(route=route, prefill_tok_s=prefill,
                                   decode_tok_s=generated / seconds)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--moe", action="store_true")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "ROUTE", "JSON"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        model, route, out = args.worker
        worker(Path(model), route, Path(out))
        return 0

    import torch
    if not torch.cuda.is_available():
        print("bench_engine: needs a CUDA GPU (nox -s bench on a V100)",
              file=sys.stderr)
        return 2
    from tests.engine import drive
    from vllm_volta import report
    args.out.mkdir(parents=True, exist_ok=True)
    machine = drive._machine()
    env = drive.environment(args.out, machine)
    models = [("llama-8b-shape", False)] + ([("mixtral-shape", True)]
                                            if args.moe else [])
    rows = []
    for name, moe in models:
        model_dir = make_model(args.out / "models", name, args.layers, moe)
        results = {}
        for route in ("before", "after"):
            result = args.out / f"{name}-{route}.json"
            route_env = dict(env)
            if moe and route == "before":
                route_env["VLLM_VOLTA_MOE_TC_MIN_TOKENS"] = NO_TENSOR_CORE_MOE
            log = open(args.out / f"{name}-{route}.log", "w")
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--out",
                 str(args.out), "--worker", str(model_dir), route,
                 str(result)], cwd=ROOT, env=route_env, stdout=log,
                stderr=subprocess.STDOUT)
            if proc.returncode != 0 or not result.is_file():
                print(f"bench_engine: {name} {route} failed (exit "
                      f"{proc.returncode}); see {log.name}", file=sys.stderr)
                return 1
            results[route] = json.loads(result.read_text())
        b, a = results["before"], results["after"]
        rows.append([
            name, f"{b['prefill_tok_s']:,.0f}", f"{a['prefill_tok_s']:,.0f}",
            f"{a['prefill_tok_s'] / b['prefill_tok_s']:.2f}",
            f"{b['decode_tok_s']:,.0f}", f"{a['decode_tok_s']:,.0f}",
            f"{a['decode_tok_s'] / b['decode_tok_s']:.2f}"
        ])
    columns = ["model", "prefill tok/s before", "after", "x",
               "decode tok/s before", "after", "x"]
    forced = "" if machine.get("native") else ", Volta path FORCED"
    title = (f"V0 engine throughput, {args.layers} layers, "
             f"{machine.get('gpu')}{forced}, torch {machine.get('torch')}")
    report.show(title, columns, rows)
    if args.markdown:
        args.markdown.write_text(f"{title}\n\n" +
                                 report.markdown(columns, rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
