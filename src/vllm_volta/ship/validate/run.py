"""Run the validation plan on a V100 host and write a JSON report.

Every step is recorded (status, seconds, details, raw responses), so a report
doubles as a recording for the garbage detector's tests. Stdlib only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from vllm_volta.ship.validate import doctor
from vllm_volta.ship.validate.garbage import judge_record
from vllm_volta.ship.validate.plan import STRATEGY_ENV, Options, Step, build_plan

POLL_S = 2.0  # seconds between /health polls
_BACKEND_RE = re.compile(r"Using (\S+(?: \S+)*?) backend")


@dataclass
class StepResult:
    id: str
    status: str  # pass | fail | skip
    seconds: float
    detail: str
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "status": self.status, "seconds": round(self.seconds, 1),
                "detail": self.detail, **self.data}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post_json(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))  # NaN is accepted by json


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_serve(step: Step, options: Options, log_dir: Path, say: Callable[[str], None]) -> StepResult:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in step.argv]
    log_path = log_dir / f"{step.id}.log"
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    env = {**os.environ, **step.env}
    say(f"[{step.id}] starting: {step.shell(str(port))}")
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    data: dict = {"command": argv, "log": str(log_path), "responses": [], "verdicts": []}
    try:
        deadline = started + step.startup_timeout_s
        while not _healthy(base):
            if process.poll() is not None:
                return StepResult(step.id, "fail", time.monotonic() - started,
                                  f"server exited with {process.returncode} before it was ready",
                                  {**data, "log_tail": _tail(log_path)})
            if time.monotonic() > deadline:
                return StepResult(step.id, "fail", time.monotonic() - started,
                                  f"server not ready after {step.startup_timeout_s:.0f} s",
                                  {**data, "log_tail": _tail(log_path)})
            time.sleep(POLL_S)
        data["startup_s"] = round(time.monotonic() - started, 1)
        say(f"[{step.id}] ready after {data['startup_s']} s; sending {len(step.cases)} prompts")
        bad = []
        for case in step.cases:
            body = {"model": step.model, "prompt": case.prompt, "max_tokens": case.max_tokens,
                    "temperature": 0.0, "logprobs": 1}
            record = {"case": case.id, "prompt": case.prompt}
            try:
                try:
                    record["response"] = _post_json(base + "/v1/completions", body,
                                                    options.request_timeout_s)
                except urllib.error.HTTPError as exc:
                    # NaN log-probs make vLLM's JSON response fail (HTTP 500): ask
                    # again without log-probs to see the text; judge_record flags it.
                    record["logprobs_error"] = f"HTTP {exc.code}"
                    body.pop("logprobs")
                    record["response"] = _post_json(base + "/v1/completions", body,
                                                    options.request_timeout_s)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                record["error"] = str(exc)
                data["responses"].append(record)
                bad.append(f"{case.id}: request failed: {exc}")
                continue
            data["responses"].append(record)
            verdict = judge_record(case, record)
            data["verdicts"].append(verdict.to_json())
            if not verdict.ok:
                bad.append(f"{case.id}: " + "; ".join(f.detail for f in verdict.findings))
            say(f"[{step.id}] {case.id}: {'ok' if verdict.ok else 'GARBAGE'} {verdict.text[:60]!r}")
        log_text = log_path.read_text(errors="replace")
        backends = sorted(set(_BACKEND_RE.findall(log_text)))
        data["attention_backends_logged"] = backends
        if not any("sdpa" in b.lower() for b in backends):
            bad.append(f"server log names no SDPA attention backend (found: {backends or 'none'})")
        for marker in ("Traceback (most recent call last)", "NCCL error", "CUDA error"):
            if marker in log_text:
                bad.append(f"server log contains {marker!r}")
        status = "fail" if bad else "pass"
        return StepResult(step.id, status, time.monotonic() - started,
                          "; ".join(bad) or f"{len(step.cases)} coherent completions", data)
    finally:
        _stop(process)


def run_import(step: Step) -> StepResult:
    started = time.monotonic()
    done = subprocess.run(step.argv, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **step.env})
    out = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        return StepResult(step.id, "fail", time.monotonic() - started,
                          f"exit {done.returncode}: {done.stderr[-1500:]}")
    return StepResult(step.id, "pass", time.monotonic() - started, f"vllm {out}", {"version": out})


def validate(options: Options, report_path: Path, say: Callable[[str], None] = print,
             facts: dict | None = None) -> int:
    """Run every step, write the report, return the exit status (0 = all passed)."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    log_dir = report_path.with_suffix(".logs")
    log_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    say("[doctor] gathering facts (imports torch and vllm in a child process)")
    # the doctor sees the environment the serve steps get (the strategy note's settings)
    env = {**os.environ, **(STRATEGY_ENV if options.strategy_env else {})}
    facts = facts if facts is not None else doctor.gather_facts(env)
    checks = doctor.diagnose(facts, allow_non_volta=options.allow_non_volta)
    for check in checks:
        say(f"[doctor] {check.status:4} {check.id}: {check.detail}")
    gpu_count = len(doctor.gpus_of(facts))
    results = [StepResult("doctor", "fail" if doctor.failed(checks) else "pass", time.monotonic() - t0,
                          ", ".join(c.id for c in checks if c.status == "fail") or "all checks passed")]

    for step in build_plan(options, gpu_count)[1:]:
        if step.skip_reason or (step.kind == "serve" and gpu_count < step.gpus_needed):
            reason = step.skip_reason or f"needs {step.gpus_needed} GPU(s), found {gpu_count}"
            status = "fail" if (options.require_tp and step.gpus_needed > 1) or step.gpus_needed == 1 else "skip"
            results.append(StepResult(step.id, status, 0.0, reason))
            say(f"[{step.id}] {status}: {reason}")
            continue
        say(f"[{step.id}] {step.title}")
        result = run_import(step) if step.kind == "import" else run_serve(step, options, log_dir, say)
        results.append(result)
        say(f"[{step.id}] {result.status} in {result.seconds:.0f} s: {result.detail[:200]}")

    ok = all(r.status in ("pass", "skip") for r in results)
    report = {
        "tool": "vllm-volta ship validate",
        "report_version": 1,
        "started": started_at,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ok": ok,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(options).items()},
        "facts": facts,
        "doctor": doctor.checks_json(checks),
        "steps": [r.to_json() for r in results],
    }
    report_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    say(f"report: {report_path} ({'PASS' if ok else 'FAIL'})")
    return 0 if ok else 1
