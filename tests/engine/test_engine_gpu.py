"""The whole engine proof (drive.py) on this machine's GPU.

Skips without CUDA. On a V100 it runs natively against the installed vLLM;
on another GPU it forces compute capability 7.0 (drive.py says so in the
record). VLLM_VOLTA_ENGINE_RECORD names where the Markdown record goes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (runs vLLM's V0 engine and server on it); "
                "the CPU parts are test_rules, test_models, test_harness",
                allow_module_level=True)

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_engine_proof(tmp_path):
    cmd = [sys.executable, "-m", "tests.engine.drive", "--out", str(tmp_path)]
    if os.environ.get("VLLM_VOLTA_ENGINE_RECORD"):
        cmd += ["--record", os.environ["VLLM_VOLTA_ENGINE_RECORD"]]
    done = subprocess.run(cmd, cwd=ROOT)
    record = (tmp_path / "record.md")
    text = record.read_text() if record.is_file() else "(no record)"
    assert done.returncode == 0, text[-3000:]
