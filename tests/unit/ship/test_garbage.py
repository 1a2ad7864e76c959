import json
import math
from pathlib import Path

import pytest

from vllm_volta.ship.validate.garbage import PromptCase, check_logprobs, check_text, judge, judge_record
from vllm_volta.ship.validate.prompts import CASES

RECORDED = Path(__file__).resolve().parents[2] / "data" / "recorded_outputs"
FILES = sorted(RECORDED.glob("*.json"))
BY_ID = {c.id: c for c in CASES}


def test_recordings_present():
    assert len(FILES) >= 7
    assert any("coherent" in f.name for f in FILES) and any("bang" in f.name for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_recorded_outputs(path):
    data = json.loads(path.read_text())
    assert data["recording"]["how"].startswith("Hand-made")  # provenance stays visible
    for record in data["responses"]:
        verdict = judge_record(BY_ID[record["case"]], record)
        rules = {f.rule for f in verdict.findings}
        assert rules == set(data["expect"][record["case"]]), (record["case"], verdict.findings)


def _choice(text, tokens=None, values=None):
    logprobs = None if tokens is None else {"tokens": tokens, "token_logprobs": values}
    return {"text": text, "logprobs": logprobs}


def test_nan_and_clamped_logprobs():
    rules = {f.rule for f in check_logprobs({"tokens": [" a", " b", " c"],
                                              "token_logprobs": [-0.1, math.nan, -9999.0]})}
    assert rules == {"nan_logprob", "inf_logprob"}
    assert check_logprobs({"tokens": [" a"], "token_logprobs": [float("-inf")]})[0].rule == "inf_logprob"
    assert check_logprobs({"tokens": [" a", " b"], "token_logprobs": [-0.2, -3.5]}) == []
    assert check_logprobs(None) == []


def test_nan_survives_json_round_trip():
    """Python's json (the runner's reader) turns a NaN literal back into a float NaN."""
    choice = json.loads('{"text": " Paris", "logprobs": {"tokens": [" Paris"], "token_logprobs": [NaN]}}')
    assert [f.rule for f in judge(BY_ID["capital"], choice).findings] == ["nan_logprob"]


@pytest.mark.parametrize(("text", "rule"), [
    ("!!!", None), ("Hello!!!!", "bang_run"), ("wow! ! ! great", None),
    ("a" * 11, None), ("a" * 12, "char_run"), ("\u7684" * 12, "char_run"), ("-" * 40, None), ("\u00e9t\u00e9 caf\u00e9", None),
    ("ok\x1b[0m", "non_printable"), ("ok\ufffd", "non_printable"), ("line\n\ttab", None),
    ("   ", "empty"),
])
def test_text_rules(text, rule):
    assert [f.rule for f in check_text(text)][:1] == ([rule] if rule else [])


def test_expected_words_whole_word_case_insensitive():
    case = PromptCase("x", "p", (("42", "forty-two"), ("paris",)))
    assert judge(case, _choice(" PARIS has 42 bridges")).ok
    assert not judge(case, _choice(" Parisian 142")).ok
    assert judge(case, _choice(" Forty-two, in Paris.")).ok


def test_token_loop_needs_eight_in_a_row():
    tokens = [" the"] * 7 + [" end"]
    assert judge(PromptCase("x", "p", ()), _choice("".join(tokens), tokens, [-0.1] * 8)).ok
    tokens = [" the"] * 8
    assert {f.rule for f in judge(PromptCase("x", "p", ()), _choice("".join(tokens), tokens, [-0.1] * 8)).findings} == {"token_loop"}


def test_logprobs_error_is_a_finding():
    record = {"case": "capital", "response": {"choices": [_choice(" Paris.")]}, "logprobs_error": "HTTP 500"}
    assert [f.rule for f in judge_record(BY_ID["capital"], record).findings] == ["logprobs_unserialisable"]


def test_prompt_set_shape():
    assert [c.id for c in CASES] == ["capital", "arithmetic", "planets", "water", "long_context"]
    assert len(BY_ID["long_context"].prompt) > 2000  # spans many 16-token KV blocks
