"""What the engine proof runs: one job per process, each a list of modes.

A mode is a V0 engine configuration and the prompt set it generates for;
every family runs ``eager`` and ``graph`` (CUDA graphs) on the base set.
The Llama jobs add prefix caching, chunked prefill, a batch of 16 mixed
lengths, preemption forced by a small KV cache, an 8300-token context and a
33,000-token prompt prefilled in chunks.
The 4-bit jobs (AWQ and compressed-tensors W4A16 checkpoints of the tiny
Llama and Qwen2-MoE, GPTQ checkpoints of the tiny Qwen2-MoE and Mixtral,
tiny_models.QUANTIZED) run ``eager``, ``graph`` and the batch of 16 (its
prompts are long enough to take the large-batch kernels), against
transformers on the dequantized weights.
"""
from __future__ import annotations

import dataclasses

from tests.support.tiny_models import FAMILIES, QUANTIZED

BLOCKS = 2048  # KV cache blocks of 16 tokens when not constrained


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    prompts: str                       # prompt set (prompts.py)
    engine: dict                       # LLM(...) keyword arguments
    rounds: int = 1                    # prefix caching: run the set twice
    expect: str = ""                   # an engine fact the mode must show


def _base(max_model_len: int = 2304) -> dict:
    return dict(max_model_len=max_model_len, num_gpu_blocks_override=BLOCKS,
                enable_prefix_caching=False, enable_chunked_prefill=False,
                max_num_seqs=32)


EAGER = Mode("eager", "base", dict(enforce_eager=True, **_base()))
GRAPH = Mode("graph", "base", dict(enforce_eager=False, **_base()))

LLAMA_MODES = (
    Mode("prefix-caching", "prefix",
         dict(enforce_eager=False, **{**_base(), "enable_prefix_caching": True}),
         rounds=2, expect="prefix_hits"),
    Mode("chunked-prefill", "batch",
         dict(enforce_eager=False, **{**_base(), "enable_chunked_prefill": True,
                                      "max_num_batched_tokens": 256})),
    Mode("batch16", "batch", dict(enforce_eager=False, **_base())),
    Mode("preemption", "batch",
         dict(enforce_eager=False, **{**_base(), "num_gpu_blocks_override": 200}),
         expect="preempted"),
)
LLAMA_LONG = (
    Mode("long-8300", "long", dict(enforce_eager=False, **_base(8448))),
    # 33,000 prompt tokens in 2048-token chunks: each chunk after the first
    # attends to up to 30,976 cached tokens.
    Mode("long-33k", "long33k",
         dict(enforce_eager=False, **{**_base(33280),
                                      "enable_chunked_prefill": True,
                                      "max_num_batched_tokens": 2048,
                                      "num_gpu_blocks_override": 2304})),
)

JOBS: dict[str, tuple[str, tuple[Mode, ...]]] = {
    name: (name, (EAGER, GRAPH)) for name in FAMILIES}
JOBS["llama-modes"] = ("llama", LLAMA_MODES)
JOBS["llama-long"] = ("llama", LLAMA_LONG)

BATCH16 = Mode("batch16", "batch", dict(enforce_eager=False, **_base()))
for _name in QUANTIZED:
    JOBS[_name] = (_name, (EAGER, GRAPH, BATCH16))
