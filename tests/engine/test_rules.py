"""The comparison rules, on synthetic outputs: each rule can fail."""
from __future__ import annotations

import math

from tests.engine import rules

STEPS = rules.STEPS


def _ref(tokens, second=None):
    """A reference: each step's token first (-0.01), a runner-up at -5."""
    second = second or [t + 1 for t in tokens]
    top = [[(t, -0.01), (s, -5.0), (900, -7.0), (901, -8.0), (902, -9.0)]
           for t, s in zip(tokens, second)]
    return list(tokens), top


def _engine(tokens, top_ref, shift=0.0):
    return list(tokens), [{i: lp + shift for i, lp in step}
                          for step in top_ref]


def test_identical_outputs_pass_with_all_steps():
    tokens, top = _ref(range(10, 10 + STEPS))
    ours, ours_top = _engine(tokens, top, shift=0.01)
    v = rules.compare_greedy(ours, ours_top, tokens, top)
    assert v.ok and v.exact == STEPS and v.near_tie is None
    assert math.isclose(v.logprob_gap, 0.01, abs_tol=1e-9)


def test_planted_wrong_token_fails():
    tokens, top = _ref(range(10, 10 + STEPS))
    ours, ours_top = _engine(tokens, top)
    ours[7] = 333                       # not in the reference's top 5
    ours_top[7] = {333: -0.01, 334: -4.0}
    v = rules.compare_greedy(ours, ours_top, tokens, top)
    assert not v.ok and v.exact == 7 and v.near_tie is False
    assert "not in each other's top 5" in v.why


def test_near_tie_parting_passes_and_is_reported():
    tokens, top = _ref(range(10, 10 + STEPS))
    ours, ours_top = _engine(tokens, top)
    runner_up = top[20][1][0]
    ours[20] = runner_up                # the reference's second choice...
    ours_top[20] = {runner_up: -0.6, tokens[20]: -0.8}  # ...and vice versa
    v = rules.compare_greedy(ours, ours_top, tokens, top)
    assert v.ok and v.exact == 20 and v.near_tie is True


def test_one_sided_top5_is_not_a_near_tie():
    tokens, top = _ref(range(10, 10 + STEPS))
    ours, ours_top = _engine(tokens, top)
    runner_up = top[3][1][0]
    ours[3] = runner_up
    ours_top[3] = {runner_up: -0.1, 777: -2.0}  # reference's token missing
    v = rules.compare_greedy(ours, ours_top, tokens, top)
    assert not v.ok and v.near_tie is False


def test_logprob_gap_over_the_bound_fails_even_when_tokens_match():
    tokens, top = _ref(range(10, 10 + STEPS))
    ours, ours_top = _engine(tokens, top)
    ours_top[5][top[5][1][0]] = -5.0 + 2 * rules.MAX_GAP  # a runner-up moved
    v = rules.compare_greedy(ours, ours_top, tokens, top)
    assert not v.ok and v.exact == STEPS
    assert math.isclose(v.logprob_gap, 2 * rules.MAX_GAP)


def test_too_few_tokens_fails():
    tokens, top = _ref(range(10, 10 + STEPS))
    v = rules.compare_greedy(tokens[:5], [{}] * 5, tokens, top)
    assert not v.ok and "need 32 tokens" in v.why


def test_embedding_cosine_rule():
    ref = [1.0, 2.0, 3.0, 4.0]
    assert rules.compare_embedding([1.0, 2.0, 3.0, 4.001], ref).ok
    planted = rules.compare_embedding([1.0, 2.0, 3.0, -4.0], ref)
    assert not planted.ok and "< 0.999" in planted.why
    assert not rules.compare_embedding([1.0, 2.0], ref).ok


def test_summary_fails_when_one_prompt_fails():
    tokens, top = _ref(range(10, 10 + STEPS))
    good = rules.compare_greedy(*_engine(tokens, top), tokens, top)
    ours, ours_top = _engine(tokens, top)
    ours[0] = 999
    bad = rules.compare_greedy(ours, ours_top, tokens, top)
    s = rules.summarise([good, bad])
    assert not s["ok"] and s["full_match"] == 1 and s["not_top5"] == 1
    assert s["exact_min"] == 0
    assert not rules.summarise([])["ok"]
