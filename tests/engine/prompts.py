"""The prompt sets, as token ids (fixed seeds) and one text prompt.

- ``base``: lengths 1, 9, 70, 200 (longer than Mistral's 64-token and
  Gemma 2's 32-token windows) and one text prompt through the tokenizer;
- ``batch``: 16 prompts of mixed lengths from 1 to 2048 tokens;
- ``prefix``: 4 prompts sharing a 700-token prefix, different tails;
- ``long``: one prompt of 8300 tokens (over 8192);
- ``long33k``: one prompt of 33,000 tokens (past 32K, where V0 turns on
  chunked prefill by default: later chunks attend to a long cached context).
"""
from __future__ import annotations

import random

from tests.support import tiny_tokenizer as tt

BASE_LENGTHS = (1, 9, 70, 200)
BATCH_LENGTHS = (1, 2, 7, 16, 31, 64, 100, 200, 333, 511, 640, 900, 1024,
                 1500, 1800, 2048)
LONG_LENGTH = 8300
LONG_33K_LENGTH = 33000
PREFIX_LENGTH = 700
TEXT_PROMPT = " ".join(tt.words()[10:16])


def _ids(rnd: random.Random, n: int) -> list[int]:
    return [rnd.randrange(len(tt.SPECIALS), tt.VOCAB_SIZE) for _ in range(n)]


def token_set(name: str, seed: int = 0) -> list[list[int]]:
    rnd = random.Random(f"{name}:{seed}")
    if name == "base":
        return [_ids(rnd, n) for n in BASE_LENGTHS]
    if name == "batch":
        return [_ids(rnd, n) for n in BATCH_LENGTHS]
    if name == "prefix":
        shared = _ids(rnd, PREFIX_LENGTH)
        return [shared + _ids(rnd, n) for n in (1, 5, 17, 40)]
    if name == "long":
        return [_ids(rnd, LONG_LENGTH)]
    if name == "long33k":
        return [_ids(rnd, LONG_33K_LENGTH)]
    raise KeyError(
        f"no prompt set {name!r}: base, batch, prefix, long, long33k")
