"""The comparison rules between the engine's output and the reference.

Generation (greedy), per prompt:
- ``exact``: how many leading steps chose the same token (of ``steps``);
- where the two part before ``steps``, the parting must be a near-tie: the
  engine's token must be in the reference's top 5 at that step and the
  reference's token in the engine's top 5 (vLLM's own
  ``check_logprobs_close`` rule). After a parting the contexts differ, so
  later steps are not compared;
- ``logprob_gap``: the largest |engine - reference| log-probability of any
  token in both top-5 lists over the matched steps (fp16 against fp32: a
  few 1e-2; a wrong kernel gives whole nats), reported, and bounded by
  ``MAX_GAP``. The runners-up count: the chosen token's log-probability is
  near 0 on both sides when the distribution is peaked.

A prompt passes when all ``steps`` match, or when they part at a near-tie
and the gap bound holds. Embeddings: cosine similarity >= ``MIN_COSINE``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

STEPS = 32
MIN_COSINE = 0.999
MAX_GAP = 0.5  # nats; see the module docstring


@dataclasses.dataclass
class Verdict:
    ok: bool
    exact: int                  # leading steps with the same token
    steps: int                  # steps compared
    near_tie: Optional[bool]    # the parting was a top-5 near-tie (None: no parting)
    logprob_gap: float          # worst |logprob difference| of the chosen token
    why: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def compare_greedy(engine_tokens: Sequence[int],
                   engine_top: Sequence[dict[int, float]],
                   ref_tokens: Sequence[int],
                   ref_top: Sequence[Sequence[tuple[int, float]]],
                   steps: int = STEPS) -> Verdict:
    """Judge one prompt. ``engine_top[i]`` maps token id -> logprob (the
    engine's top-5 plus its chosen token); ``ref_top[i]`` is the reference's
    top-5 (id, logprob) list."""
    if len(engine_tokens) < steps or len(ref_tokens) < steps:
        return Verdict(False, 0, steps, None, math.inf,
                       f"need {steps} tokens: engine gave "
                       f"{len(engine_tokens)}, reference {len(ref_tokens)}")
    gap = 0.0
    for i in range(steps):
        ours, theirs = engine_tokens[i], ref_tokens[i]
        ref_map = dict(ref_top[i])
        if ours == theirs:
            for token, logprob in engine_top[i].items():
                if token in ref_map:
                    gap = max(gap, abs(logprob - ref_map[token]))
            continue
        tie = ours in ref_map and theirs in engine_top[i]
        why = (f"parted at step {i}: engine {ours}, reference {theirs}; "
               + ("a top-5 near-tie" if tie else
                  "not in each other's top 5"))
        ok = tie and gap <= MAX_GAP
        if tie and not ok:
            why += f"; logprob gap {gap:.3f} > {MAX_GAP}"
        return Verdict(ok, i, steps, tie, gap, why)
    ok = gap <= MAX_GAP
    return Verdict(ok, steps, steps, None, gap,
                   "" if ok else f"logprob gap {gap:.3f} > {MAX_GAP}")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def compare_embedding(engine: Sequence[float],
                      ref: Sequence[float]) -> Verdict:
    if len(engine) != len(ref):
        return Verdict(False, 0, 1, None, math.inf,
                       f"sizes differ: {len(engine)} vs {len(ref)}")
    c = cosine(engine, ref)
    ok = c >= MIN_COSINE
    return Verdict(ok, int(ok), 1, None, 1.0 - c,
                   f"cosine {c:.6f}" + ("" if ok else f" < {MIN_COSINE}"))


def summarise(verdicts: Sequence[Verdict]) -> dict:
    """One table row's figures over a mode's prompts."""
    return {
        "ok": all(v.ok for v in verdicts) and bool(verdicts),
        "prompts": len(verdicts),
        "exact_min": min((v.exact for v in verdicts), default=0),
        "steps": max((v.steps for v in verdicts), default=0),
        "full_match": sum(v.exact == v.steps for v in verdicts),
        "near_ties": sum(bool(v.near_tie) for v in verdicts),
        "not_top5": sum(v.near_tie is False for v in verdicts),
        "logprob_gap": max((v.logprob_gap for v in verdicts), default=0.0),
        "failures": [v.why for v in verdicts if not v.ok][:3],
    }
