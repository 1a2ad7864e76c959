"""``vllm serve`` the tiny Llama; ask it over HTTP with the openai client.

``python -m tests.engine.server --models DIR --out FILE``

Starts vLLM's CLI (``python -m vllm.entrypoints.cli.main serve``, what the
``vllm`` console script runs) on the tiny Llama with its chat template,
then asks three ways: a completion with log-probabilities, a chat answer,
and the same chat streamed. Each answer is judged by the project's garbage
detector (vllm_volta.ship.validate.garbage) against the words the float32
transformers reference continues with, and must equal those words.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.engine import reference, runner

ROOT = Path(__file__).resolve().parents[2]
STEPS = 16
STARTUP_S = 240


def _garbage():
    sys.path.insert(0, str(ROOT / "src"))
    from vllm_volta.ship.validate import garbage
    return garbage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen) -> None:
    import urllib.request
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode} "
                               "before answering /health (see its log)")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"vllm serve did not answer /health in {STARTUP_S} s")


def _expected(model_dir: Path, prompt_ids: list[int]) -> list[str]:
    import torch
    from transformers import AutoTokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = reference.load(model_dir, "generate", device)
    tokens = reference.greedy(model, prompt_ids, STEPS).tokens
    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok.decode(tokens).split()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    from openai import OpenAI
    from transformers import AutoTokenizer

    garbage = _garbage()
    model_dir = args.models / "llama"
    tok = AutoTokenizer.from_pretrained(model_dir)
    words = tok.decode(list(range(40, 44))).split()
    messages = [{"role": "user", "content": " ".join(words)}]
    chat_ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    completion_prompt = " ".join(words)
    expect_chat = _expected(model_dir, chat_ids)
    expect_plain = _expected(model_dir, tok(completion_prompt).input_ids)
    runner.log(f"server: expected chat answer {' '.join(expect_chat[:6])} ...")

    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve",
           str(model_dir), "--served-model-name", "tiny-llama",
           "--port", str(port), "--host", "127.0.0.1", "--seed", "0",
           "--max-model-len", "2048", "--num-gpu-blocks-override", "512",
           "--gpu-memory-utilization", "0.2", "--swap-space", "1",
           "--max-num-seqs", "16"]
    result = {"command": " ".join(cmd[1:]), "cases": []}
    with open(args.log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                env=os.environ.copy())
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, proc)
        client = OpenAI(base_url=url + "/v1", api_key="none")
        cases = []
        c = client.completions.create(model="tiny-llama",
                                      prompt=completion_prompt,
                                      max_tokens=STEPS, temperature=0,
                                      logprobs=1)
        choice = c.choices[0]
        cases.append(("completion", expect_plain, {
            "text": choice.text,
            "logprobs": {"tokens": choice.logprobs.tokens,
                         "token_logprobs": choice.logprobs.token_logprobs}}))
        ch = client.chat.completions.create(model="tiny-llama",
                                            messages=messages,
                                            max_tokens=STEPS, temperature=0)
        cases.append(("chat", expect_chat,
                      {"text": ch.choices[0].message.content}))
        stream = client.chat.completions.create(model="tiny-llama",
                                                messages=messages,
                                                max_tokens=STEPS,
                                                temperature=0, stream=True)
        text = "".join((ev.choices[0].delta.content or "")
                       for ev in stream if ev.choices)
        cases.append(("chat-stream", expect_chat, {"text": text}))
        for name, expect, choice in cases:
            case = garbage.PromptCase(
                name, completion_prompt,
                tuple((w,) for w in expect[:4]), max_tokens=STEPS)
            verdict = garbage.judge(case, choice)
            same = choice["text"].split() == expect
            result["cases"].append({
                "case": name, "garbage_ok": verdict.ok,
                "findings": [f.rule + ": " + f.detail
                             for f in verdict.findings],
                "matches_reference": same, "text": choice["text"],
                "expected": " ".join(expect)})
            runner.log(f"server {name}: garbage {'ok' if verdict.ok else 'FAIL'}"
                       f", reference words {'equal' if same else 'DIFFER'}")
    except Exception as exc:  # noqa: BLE001 - recorded as the failure
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["ok"] = (not result.get("error") and len(result["cases"]) == 3
                    and all(c["garbage_ok"] and c["matches_reference"]
                            for c in result["cases"]))
    args.out.write_text(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("VLLM_USE_V1", "0")
    sys.exit(main())
