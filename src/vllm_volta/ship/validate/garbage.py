"""Tell coherent greedy output from the garbage a broken V100 kernel produces.

The known failure shapes on SM 7.0: NaN logits make greedy decoding pick
token id 0, which is ``!`` in byte-level BPE vocabularies such as Qwen2's and
GPT-2's, so the output is a run of ``!`` (in SentencePiece vocabularies such as
Mistral's, id 0 is ``<unk>``: empty text or one token looping). vLLM's OpenAI
server clamps -inf log-probs to -9999.0 and passes NaN through, and its
JSON response refuses NaN (Starlette's allow_nan=False): a request with
``logprobs`` then fails with HTTP 500, and the runner asks again without. Other shapes: a single token repeated to the
end, control or unassigned characters, U+FFFD from broken byte sequences, and
fluent-looking text that lacks the answer the prompt forces.

Input is vLLM's ``/v1/completions`` choice (``text`` and ``logprobs``), so the
detector runs the same on a live server and on recorded responses. Stdlib only.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field

BANG_RUN = 4  # '!!!!' and longer: the token-0 failure
CHAR_RUN = 12  # any other non-space character repeated this often...
RULE_CHARS = "-=_*.#~"  # ...except Markdown rules and separators (token loops catch those)
TOKEN_LOOP = 8  # the same token this many times in a row
CLAMPED_LOGPROB = -9999.0  # what vLLM's server writes for -inf


@dataclass(frozen=True)
class PromptCase:
    """A prompt whose greedy continuation must contain every ``expect`` group.

    Each group is a tuple of alternatives; one alternative (a whole word,
    case-insensitive) must appear.
    """

    id: str
    prompt: str
    expect: tuple[tuple[str, ...], ...]
    max_tokens: int = 32


@dataclass(frozen=True)
class Finding:
    rule: str
    detail: str


@dataclass
class Verdict:
    case_id: str
    text: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict:
        return {"case": self.case_id, "ok": self.ok, "text": self.text,
                "findings": [asdict(f) for f in self.findings]}


def _bad_characters(text: str) -> list[str]:
    bad = []
    for char in text:
        if char in "\n\t\r":
            continue
        category = unicodedata.category(char)
        if char == "\ufffd" or category in ("Cc", "Cs", "Co", "Cn"):
            bad.append(f"U+{ord(char):04X}")
    return bad


def _longest_run(items: list[str]) -> tuple[str, int]:
    best, best_len, current, length = "", 0, None, 0
    for item in items:
        length = length + 1 if item == current else 1
        current = item
        if length > best_len:
            best, best_len = item, length
    return best, best_len


def check_text(text: str) -> list[Finding]:
    findings = []
    if not text.strip():
        findings.append(Finding("empty", "the model produced no visible text"))
        return findings
    bang = re.search(r"!{%d,}" % BANG_RUN, text)
    if bang:
        findings.append(Finding("bang_run", f"run of {len(bang.group())} '!' at offset {bang.start()}"))
    for match in re.finditer(r"([^\s!%s])\1{%d,}" % (re.escape(RULE_CHARS), CHAR_RUN - 1), text):
        findings.append(
            Finding("char_run", f"{match.group(1)!r} repeated {len(match.group())} times")
        )
        break
    bad = _bad_characters(text)
    if bad:
        findings.append(
            Finding("non_printable", f"{len(bad)} control/unassigned/replacement chars: {', '.join(bad[:5])}")
        )
    return findings


def check_logprobs(logprobs: dict | None) -> list[Finding]:
    """Check vLLM's completion ``logprobs`` object (tokens, token_logprobs)."""
    if not logprobs:
        return []
    findings = []
    values = logprobs.get("token_logprobs") or []
    nan = sum(1 for v in values if v is not None and isinstance(v, float) and math.isnan(v))
    inf = sum(
        1 for v in values
        if v is not None and not (isinstance(v, float) and math.isnan(v))
        and (math.isinf(v) or v <= CLAMPED_LOGPROB)
    )
    if nan:
        findings.append(Finding("nan_logprob", f"{nan} of {len(values)} token log-probs are NaN"))
    if inf:
        findings.append(
            Finding("inf_logprob", f"{inf} of {len(values)} token log-probs are -inf (clamped to -9999)")
        )
    tokens = logprobs.get("tokens") or []
    token, run = _longest_run(tokens)
    if run >= TOKEN_LOOP and token.strip():
        findings.append(Finding("token_loop", f"token {token!r} repeated {run} times in a row"))
    return findings


def check_expected(text: str, expect: tuple[tuple[str, ...], ...]) -> list[Finding]:
    findings = []
    for group in expect:
        if not any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) for word in group):
            findings.append(Finding("missing_expected", f"none of {list(group)} in the output"))
    return findings


def judge(case: PromptCase, choice: dict) -> Verdict:
    """Judge one completion choice (``{"text": ..., "logprobs": {...}}``)."""
    text = choice.get("text") or ""
    verdict = Verdict(case.id, text)
    verdict.findings += check_text(text)
    verdict.findings += check_logprobs(choice.get("logprobs"))
    if not any(f.rule in ("empty", "bang_run") for f in verdict.findings):
        verdict.findings += check_expected(text, case.expect)
    return verdict


def judge_record(case: PromptCase, record: dict) -> Verdict:
    """Judge a recorded exchange: ``{"case", "prompt", "response", "logprobs_error"?}``.

    ``logprobs_error`` is set when the request with ``logprobs`` failed and the
    text came from a second request without them: vLLM's server answers HTTP
    500 when a log-prob is NaN, so that failure is itself a finding.
    """
    verdict = judge(case, record["response"]["choices"][0])
    if record.get("logprobs_error"):
        verdict.findings.insert(0, Finding(
            "logprobs_unserialisable",
            f"with logprobs=1 the server failed ({record['logprobs_error']}): a NaN log-prob "
            "cannot be sent as JSON",
        ))
    return verdict
