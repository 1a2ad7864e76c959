"""dtype on Volta: no bfloat16; `auto` picks float16 (float32 where needed).

Patch: "config: refuse bfloat16 on pre-Ampere GPUs at config time"
(Tier: recommended).

vLLM 0.9.2 already resolves `--dtype auto` to float16 on compute capability
< 8.0 (float32 for gemma2, gemma3, plamo2 and glm4, which refuse float16),
and refuses an explicit bfloat16, but only at worker start, after the
engine has been set up. The series refuses it when the ModelConfig is made,
naming the GPU and the `--dtype` to use instead.

Tests marked "upstream behaviour" pass on both the pristine and the patched
tree: they pin what 0.9.2 already does so that the series keeps it.

Runs on CPU: the tree's vllm is imported with ``vllm._C`` stubbed and the
device is a CUDA platform class whose capability is mocked.
"""
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))

import vllm.config  # noqa: E402
import vllm.platforms  # noqa: E402
import vllm.worker.worker  # noqa: E402
from vllm.platforms.cuda import CudaPlatformBase  # noqa: E402

from .fakes import fake_cuda  # noqa: E402
from vllm.platforms.interface import (DeviceCapability,  # noqa: E402
                                      UnspecifiedPlatform)

V100 = "Tesla V100-SXM2-32GB"
A100 = "NVIDIA A100-SXM4-80GB"

TINY_QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}
TINY_GEMMA2 = {
    "architectures": ["Gemma2ForCausalLM"],
    "model_type": "gemma2",
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


def use_platform(monkeypatch, platform) -> None:
    monkeypatch.setattr(vllm.platforms, "_current_platform", platform)
    monkeypatch.setattr(vllm.config, "current_platform", platform)
    monkeypatch.setattr(vllm.worker.worker, "current_platform", platform)


@pytest.fixture(autouse=True)
def _tree_on_pythonpath(monkeypatch):
    # ModelConfig inspects the model class in a `python -m` subprocess: it
    # must import the same tree as this process.
    tree = str(Path(vllm.__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")])))


def model_dir(tmp_path: Path, config: dict) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


@pytest.fixture
def v100(monkeypatch):
    use_platform(monkeypatch, fake_cuda(7, 0, V100))


# --- upstream behaviour: `auto` on Volta ------------------------------------


def test_auto_resolves_to_float16_on_volta(v100, tmp_path):
    """Upstream behaviour (passes on both trees)."""
    config = vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_QWEN2),
                                     dtype="auto")
    assert config.dtype == torch.float16


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3", "plamo2", "glm4"])
def test_auto_resolves_to_float32_for_models_refusing_float16(
        v100, model_type):
    """Upstream behaviour (passes on both trees)."""
    dtype = vllm.config._resolve_auto_dtype(model_type,
                                            torch.bfloat16,
                                            is_pooling_model=False)
    assert dtype == torch.float32


def test_auto_float32_for_gemma2_through_model_config(v100, tmp_path):
    """Upstream behaviour (passes on both trees)."""
    config = vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_GEMMA2),
                                     dtype="auto")
    assert config.dtype == torch.float32


def test_explicit_half_accepted_on_volta(v100, tmp_path):
    """Upstream behaviour (passes on both trees)."""
    config = vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_QWEN2),
                                     dtype="half")
    assert config.dtype == torch.float16


def test_worker_start_still_refuses_bfloat16(v100):
    """Upstream behaviour (passes on both trees): the V0 worker's own check
    stays as a second line of defence."""
    with pytest.raises(ValueError, match="compute capability") as excinfo:
        vllm.worker.worker._check_if_gpu_supports_dtype(torch.bfloat16)
    assert V100 in str(excinfo.value)
    assert "--dtype=half" in str(excinfo.value)


# --- the patch: bfloat16 refused when the config is made --------------------


@pytest.mark.parametrize("dtype", ["bfloat16", torch.bfloat16])
def test_bfloat16_refused_at_config_time_on_volta(v100, tmp_path, dtype):
    with pytest.raises(ValueError) as excinfo:
        vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_QWEN2),
                                dtype=dtype)
    message = str(excinfo.value)
    assert "Bfloat16 is only supported" in message
    assert V100 in message and "7.0" in message
    assert "--dtype half" in message


def test_bfloat16_refused_on_turing_too(monkeypatch, tmp_path):
    use_platform(monkeypatch, fake_cuda(7, 5, "Tesla T4"))
    with pytest.raises(ValueError, match="Tesla T4"):
        vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_QWEN2),
                                dtype="bfloat16")


def test_bfloat16_refusal_suggests_float32_for_gemma2(v100, tmp_path):
    with pytest.raises(ValueError) as excinfo:
        vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_GEMMA2),
                                dtype="bfloat16")
    assert "--dtype float32" in str(excinfo.value)


# --- no change elsewhere -----------------------------------------------------


def test_bfloat16_accepted_on_ampere(monkeypatch, tmp_path):
    """Upstream behaviour (passes on both trees)."""
    use_platform(monkeypatch, fake_cuda(8, 0, A100))
    config = vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_QWEN2),
                                     dtype="bfloat16")
    assert config.dtype == torch.bfloat16


def test_bfloat16_untouched_off_cuda(monkeypatch, tmp_path):
    """Upstream behaviour (passes on both trees): only CUDA GPUs are
    checked."""
    use_platform(monkeypatch, UnspecifiedPlatform())
    config = vllm.config.ModelConfig(model=model_dir(tmp_path, TINY_QWEN2),
                                     dtype="bfloat16")
    assert config.dtype == torch.bfloat16
