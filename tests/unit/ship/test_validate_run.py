import json
import sys
from pathlib import Path

import pytest

from vllm_volta.ship.validate import run
from vllm_volta.ship.validate.plan import Options, Step
from vllm_volta.ship.validate.prompts import CASES

from .test_doctor import HEALTHY, facts

HERE = Path(__file__).resolve().parent
RECORDED = HERE.parents[1] / "data" / "recorded_outputs"
FAKE = HERE / "fake_vllm_server.py"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(run, "POLL_S", 0.1)


def fake_step(recording, *extra, step_id="serve-1gpu"):
    argv = [sys.executable, str(FAKE), "--port", "{port}", "--recording", str(RECORDED / recording), *extra]
    return Step(step_id, "fake", "serve", argv=argv, model="m", gpus_needed=1,
                startup_timeout_s=30, cases=CASES)


def test_coherent_server_passes(tmp_path):
    lines = []
    result = run.run_serve(fake_step("qwen2.5-0.5b_1gpu_coherent.json"), Options(), tmp_path, lines.append)
    assert result.status == "pass", result.detail
    assert result.data["attention_backends_logged"] == ["Torch SDPA"]
    assert len(result.data["responses"]) == 5 and all(v["ok"] for v in result.data["verdicts"])


def test_bang_server_fails_and_records_the_http_500(tmp_path):
    result = run.run_serve(fake_step("qwen2.5-0.5b_1gpu_bang_nan.json"), Options(), tmp_path, lambda s: None)
    assert result.status == "fail"
    assert all(r["logprobs_error"] == "HTTP 500" for r in result.data["responses"])
    rules = {f["rule"] for v in result.data["verdicts"] for f in v["findings"]}
    assert rules == {"logprobs_unserialisable", "bang_run"}


def test_wrong_backend_in_log_fails(tmp_path):
    step = fake_step("qwen2.5-0.5b_1gpu_coherent.json", "--log-line", "Using XFormers backend.")
    result = run.run_serve(step, Options(), tmp_path, lambda s: None)
    assert result.status == "fail" and "no SDPA attention backend" in result.detail


def test_crash_before_ready(tmp_path):
    result = run.run_serve(fake_step("qwen2.5-0.5b_1gpu_coherent.json", "--crash"), Options(), tmp_path,
                           lambda s: None)
    assert result.status == "fail" and "exited with 3" in result.detail
    assert "no kernel image" in result.data["log_tail"]


def test_validate_without_gpu_writes_a_failing_report(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "run_import", lambda step: run.StepResult("import", "pass", 0.1, "vllm x"))
    no_gpu = facts(nvidia_smi__gpus=[], nvidia_smi__error="nvidia-smi: not found")
    no_gpu["probe"]["torch"]["gpus"] = []
    report = tmp_path / "r.json"
    assert run.validate(Options(), report, say=lambda s: None, facts=no_gpu) == 1
    data = json.loads(report.read_text())
    steps = {s["id"]: s["status"] for s in data["steps"]}
    assert steps == {"doctor": "fail", "import": "pass", "serve-1gpu": "fail",
                     "serve-tp2": "skip", "serve-tp4": "skip"}
    assert data["ok"] is False and data["doctor"][0]["id"] == "gpu.present"


def test_validate_on_two_v100s(tmp_path, monkeypatch):
    """The whole runner with the fake server standing in for vllm serve."""
    monkeypatch.setattr(run, "run_import", lambda step: run.StepResult("import", "pass", 0.1, "vllm x"))
    real_serve = run.run_serve
    recordings = {"serve-1gpu": "qwen2.5-0.5b_1gpu_coherent.json", "serve-tp2": "mistral-7b_tp2_coherent.json"}

    def serve(step, options, log_dir, say):
        assert "--tensor-parallel-size" in step.argv or step.id == "serve-1gpu"
        return real_serve(fake_step(recordings[step.id], step_id=step.id), options, log_dir, say)

    monkeypatch.setattr(run, "run_serve", serve)
    report = tmp_path / "r.json"
    assert run.validate(Options(), report, say=lambda s: None, facts=HEALTHY) == 0
    data = json.loads(report.read_text())
    assert [(s["id"], s["status"]) for s in data["steps"]] == [
        ("doctor", "pass"), ("import", "pass"), ("serve-1gpu", "pass"), ("serve-tp2", "pass"), ("serve-tp4", "skip")]
    assert run.validate(Options(require_tp=True), tmp_path / "r2.json", say=lambda s: None, facts=HEALTHY) == 1


def test_doctor_probes_with_the_serve_environment(tmp_path, monkeypatch):
    seen = {}

    def gather(env):
        seen.update(env)
        return facts(nvidia_smi__gpus=[])

    monkeypatch.setattr(run.doctor, "gather_facts", gather)
    monkeypatch.setattr(run, "run_import", lambda step: run.StepResult("import", "pass", 0.1, "vllm x"))
    run.validate(Options(), tmp_path / "r.json", say=lambda s: None)
    assert seen["VLLM_ATTENTION_BACKEND"] == "TORCH_SDPA" and seen["NCCL_PROTO"] == "simple"
