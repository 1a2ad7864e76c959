"""MLA on Volta: standard attention by default, MLA backends refused.

Patch: "config: disable MLA below compute capability 8.0" (Tier: critical).

No MLA attention backend of vLLM 0.9.2 runs on a V100: Triton MLA (the
default there, block size 16) prefills with FlashAttention-2 and its decode
kernel does not compile for sm_70 with Triton 3.3; FlashMLA needs SM 9.0 and
CUTLASS MLA SM 10.0. On CUDA capability < 8.0 the series turns MLA off by
default (the model runs with standard attention, as VLLM_MLA_DISABLE=1
does), and an explicit MLA backend request is refused with the reason. No
patch may force the Triton MLA backend.

Runs on CPU: the tree's vllm is imported with ``vllm._C`` stubbed and the
device is a CUDA platform class whose capability is mocked.
"""
import json
import logging
import os
import sys
import types
from pathlib import Path

import pytest
import torch

sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))

import vllm.config  # noqa: E402
import vllm.logger  # noqa: E402
import vllm.platforms  # noqa: E402
from vllm.distributed.kv_transfer.kv_connector.utils import (  # noqa: E402
    model_aware_kv_ops_helper)
from vllm.platforms.cuda import CudaPlatformBase  # noqa: E402

from .fakes import fake_cuda  # noqa: E402
from vllm.platforms.interface import DeviceCapability, _Backend  # noqa: E402

V100 = "Tesla V100-SXM2-32GB"
A100 = "NVIDIA A100-SXM4-80GB"

# A DeepSeek-V3-shaped model, small: kv_lora_rank makes it an MLA model.
KV_LORA_RANK, QK_NOPE, QK_ROPE = 64, 32, 16
TINY_DEEPSEEK = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 1000,
    "hidden_size": 256,
    "intermediate_size": 512,
    "moe_intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_group": 1,
    "topk_group": 1,
    "kv_lora_rank": KV_LORA_RANK,
    "q_lora_rank": None,
    "qk_nope_head_dim": QK_NOPE,
    "qk_rope_head_dim": QK_ROPE,
    "v_head_dim": 32,
    "max_position_embeddings": 4096,
    "torch_dtype": "float16",
}


def use_platform(monkeypatch, platform) -> None:
    monkeypatch.setattr(vllm.platforms, "_current_platform", platform)
    monkeypatch.setattr(vllm.config, "current_platform", platform)


@pytest.fixture
def deepseek_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_DEEPSEEK))
    return str(tmp_path)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("VLLM_MLA_DISABLE", raising=False)
    monkeypatch.delenv("VLLM_ATTENTION_BACKEND", raising=False)
    # ModelConfig inspects the model class in a `python -m` subprocess: it
    # must import the same tree as this process.
    tree = str(Path(vllm.__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")])))


@pytest.fixture
def config_log():
    """Records of the vllm.config logger, with warning_once's memory wiped."""
    vllm.logger._print_warning_once.cache_clear()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    log = logging.getLogger("vllm.config")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)
    vllm.logger._print_warning_once.cache_clear()


def model_config(path: str) -> vllm.config.ModelConfig:
    return vllm.config.ModelConfig(model=path, dtype="float16")


# --- default: MLA off on Volta, on elsewhere --------------------------------


def test_mla_model_uses_standard_attention_on_volta(monkeypatch,
                                                    deepseek_dir):
    use_platform(monkeypatch, fake_cuda(7, 0, V100))
    config = model_config(deepseek_dir)
    assert config.is_deepseek_mla
    assert config.use_mla is False
    # Standard attention shapes: one KV head per attention head, head size
    # qk_nope + qk_rope (MLA would give 1 head of kv_lora_rank + qk_rope).
    assert config.get_head_size() == QK_NOPE + QK_ROPE
    parallel = vllm.config.ParallelConfig()
    assert config.get_num_kv_heads(parallel) == 4


def test_mla_off_on_turing_too(monkeypatch, deepseek_dir):
    use_platform(monkeypatch, fake_cuda(7, 5, "Tesla T4"))
    assert model_config(deepseek_dir).use_mla is False


def test_reason_is_logged_once(monkeypatch, deepseek_dir, config_log):
    use_platform(monkeypatch, fake_cuda(7, 0, V100))
    config = model_config(deepseek_dir)
    for _ in range(5):
        assert config.use_mla is False
    reasons = [r for r in config_log if "MLA is disabled" in r.getMessage()]
    assert len(reasons) == 1, [r.getMessage() for r in config_log]
    message = reasons[0].getMessage()
    assert reasons[0].levelno == logging.WARNING
    assert "7.0" in message and "standard attention" in message


def test_mla_kept_on_ampere(monkeypatch, deepseek_dir):
    """Upstream behaviour, unchanged by the series (passes on both trees)."""
    use_platform(monkeypatch, fake_cuda(8, 0, A100))
    config = model_config(deepseek_dir)
    assert config.use_mla is True
    assert config.get_head_size() == KV_LORA_RANK + QK_ROPE


def test_vllm_mla_disable_still_honoured(monkeypatch, deepseek_dir):
    """Upstream behaviour, unchanged by the series (passes on both trees)."""
    monkeypatch.setenv("VLLM_MLA_DISABLE", "1")
    use_platform(monkeypatch, fake_cuda(8, 0, A100))
    assert model_config(deepseek_dir).use_mla is False


def test_kv_connector_helper_follows_model_config(monkeypatch, deepseek_dir):
    """The disaggregated-prefill KV helper must agree with ModelConfig on
    whether the KV cache has the MLA shape."""
    use_platform(monkeypatch, fake_cuda(7, 0, V100))
    config = types.SimpleNamespace(
        model_config=model_config(deepseek_dir),
        parallel_config=types.SimpleNamespace(tensor_parallel_size=1))
    helper = model_aware_kv_ops_helper(config)
    assert helper.is_deepseek_mla
    assert helper.use_mla_opt is False


# --- explicit MLA backend requests on Volta: refused ------------------------


def test_explicit_triton_mla_keeps_mla_to_be_refused(monkeypatch,
                                                     deepseek_dir):
    """Naming an MLA backend does not silently switch MLA off: the request
    goes on to the platform, which refuses it with the reason."""
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "TRITON_MLA")
    use_platform(monkeypatch, fake_cuda(7, 0, V100))
    assert model_config(deepseek_dir).use_mla is True


@pytest.mark.parametrize("use_v1", [False, True])
def test_triton_mla_request_refused_on_volta(use_v1):
    platform = fake_cuda(7, 0, V100)
    with pytest.raises(ValueError) as excinfo:
        platform.get_attn_backend_cls(_Backend.TRITON_MLA, 576,
                                      torch.float16, "auto", 16, use_v1,
                                      True)
    message = str(excinfo.value)
    assert "TRITON_MLA" in message
    assert V100 in message and "7.0" in message
    assert "VLLM_ATTENTION_BACKEND" in message
    assert "VLLM_MLA_DISABLE" in message


@pytest.mark.parametrize("selected", [
    None, _Backend.TRITON_MLA, _Backend.FLASHMLA,
    _Backend.CUTLASS_MLA_VLLM_V1
])
@pytest.mark.parametrize("block_size", [16, 64])
@pytest.mark.parametrize("use_v1", [False, True])
def test_no_mla_backend_is_ever_returned_on_volta(selected, block_size,
                                                  use_v1):
    """Policy: Triton MLA (or any MLA backend) is never selected on Volta."""
    platform = fake_cuda(7, 0, V100)
    with pytest.raises(ValueError, match="compute capability 8.0"):
        platform.get_attn_backend_cls(selected, 576, torch.float16, "auto",
                                      block_size, use_v1, True)


def test_mla_selection_unchanged_on_ampere():
    """Upstream behaviour, unchanged by the series (passes on both trees)."""
    platform = fake_cuda(8, 0, A100)
    backend = platform.get_attn_backend_cls(None, 576, torch.bfloat16, "auto",
                                            16, False, True)
    assert backend == "vllm.attention.backends.triton_mla.TritonMLABackend"
