import json
import sys
from pathlib import Path

from vllm_volta.ship.cli import main

from .test_doctor import HEALTHY
from .wheels import vllm_wheel

RECORDED = Path(__file__).resolve().parents[2] / "data" / "recorded_outputs"


def test_validate_dry_run_prints_the_plan(capsys, tmp_path):
    assert main(["validate", "--dry-run", "--gpus", "2", "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "serve Qwen/Qwen2.5-0.5B-Instruct --dtype half --max-model-len 2048 --gpu-memory-utilization 0.5" in out
    assert "--tensor-parallel-size 2" in out and "SKIPPED: needs 4 GPUs, found 2" in out
    assert "NCCL_PROTO=simple" in out and "VLLM_ATTENTION_BACKEND=TORCH_SDPA" in out
    assert not (tmp_path / "r.json").exists()


def test_validate_dry_run_model_overrides(capsys):
    assert main(["validate", "--dry-run", "--gpus", "1", "--single-model", "/models/qwen", "--tp-sizes", "",
                 "--no-strategy-env"]) == 0
    out = capsys.readouterr().out
    assert "serve /models/qwen --dtype half" in out and "tensor parallel" not in out
    assert "NCCL_PROTO" not in out.split("prompts")[0].split("[import]")[1]


def test_doctor_from_facts_file(tmp_path, capsys):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(HEALTHY))
    assert main(["doctor", "--facts", str(path)]) == 0
    bad = dict(HEALTHY, distributions={**HEALTHY["distributions"], "vllm": "0.10.0"})
    path.write_text(json.dumps(bad))
    assert main(["doctor", "--facts", str(path)]) == 1
    assert "fail  vllm.version: vllm 0.10.0 is not a +volta build" in capsys.readouterr().out


def test_judge_recordings(capsys):
    assert main(["judge", str(RECORDED / "qwen2.5-0.5b_1gpu_coherent.json")]) == 0
    assert main(["judge", str(RECORDED / "qwen2.5-0.5b_1gpu_bang_nan.json")]) == 1
    assert "bang_run" in capsys.readouterr().out


def test_publish_dry_run_without_index(tmp_path, monkeypatch, capsys):
    for key in ("VLLM_VOLTA_INDEX_URL", "VLLM_VOLTA_INDEX_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    vllm_wheel(tmp_path, "0.9.2+volta.7")
    assert main(["publish", "--dist", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "not configured" in out
    assert main(["publish", "--dist", str(tmp_path)]) == 1
    assert "VLLM_VOLTA_INDEX_URL" in capsys.readouterr().out


def test_module_entry_point():
    import subprocess
    done = subprocess.run([sys.executable, "-m", "vllm_volta.ship", "--help"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")})
    assert done.returncode == 0 and "publish" in done.stdout and "validate" in done.stdout


def test_validate_report_defaults_to_the_cache_not_the_checkout(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VLLM_VOLTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--dry-run", "--gpus", "1", "--tp-sizes", ""]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cache" / "validate" / "volta-validate-") in out
    assert not list(tmp_path.glob("volta-validate-*"))
