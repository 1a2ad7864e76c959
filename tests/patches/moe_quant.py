"""Helpers of the MoE quantization patch tests (test_gptq_moe_volta.py,
test_mixtral_gptq_volta.py, test_bnb_moe_volta.py): a tiny Qwen3-MoE
config, a CUDA platform of a given capability swapped in wherever vLLM holds
`current_platform`, the quant config vLLM builds for a model directory, and
a FusedMoE layer made with it. CPU only; vllm._C is stubbed."""
import json
import os
import sys
import types
from pathlib import Path

import torch

sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))

import vllm.config  # noqa: E402
import vllm.platforms  # noqa: E402
# Imported before the platform is swapped: some modules probe the GPU at
# import time.
import vllm.model_executor.layers.fused_moe.layer  # noqa: E402,F401
import vllm.model_executor.layers.quantization.gptq  # noqa: E402,F401
import vllm.model_executor.layers.quantization.gptq_marlin  # noqa: E402,F401
import vllm.model_executor.layers.quantization.moe_wna16  # noqa: E402,F401
import vllm.model_executor.model_loader.weight_utils as weight_utils  # noqa: E402

from .fakes import fake_cuda  # noqa: E402

V100 = "Tesla V100-SXM2-32GB"
A100 = "NVIDIA A100-SXM4-80GB"

HIDDEN, MOE_INTERMEDIATE, EXPERTS, TOP_K = 256, 128, 8, 2
PREFIX = "model.layers.0.mlp.experts"


def tiny_qwen3_moe(**quant) -> dict:
    quantization_config = {"quant_method": "gptq", "bits": 4,
                           "group_size": 128, "desc_act": False, "sym": True}
    quantization_config.update(quant)
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "vocab_size": 1000,
        "hidden_size": HIDDEN,
        "intermediate_size": 512,
        "moe_intermediate_size": MOE_INTERMEDIATE,
        "num_experts": EXPERTS,
        "num_experts_per_tok": TOP_K,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 2048,
        "torch_dtype": "float16",
        "quantization_config": quantization_config,
    }


_ORIGINAL_PLATFORM = vllm.platforms.current_platform


def use_gpu(monkeypatch, major: int, name: str) -> None:
    """vLLM sees one CUDA GPU of capability (major, 0) named `name`."""
    platform = fake_cuda(major, 0, name)
    monkeypatch.setattr(vllm.platforms, "_current_platform", platform)
    for module in list(sys.modules.values()):
        if getattr(module, "current_platform", None) is _ORIGINAL_PLATFORM:
            monkeypatch.setattr(module, "current_platform", platform)
    # gptq_bitblas asks torch directly.
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: (major, 0))


def tree_on_pythonpath(monkeypatch) -> None:
    # ModelConfig inspects the model class in a `python -m` subprocess: it
    # must import the same tree as this process.
    tree = str(Path(vllm.__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")])))


def quant_config_of(tmp_path: Path, config: dict):
    """The ModelConfig's resolved method and the quant config vLLM builds."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    model_config = vllm.config.ModelConfig(model=str(tmp_path), dtype="auto")
    return model_config.quantization, weight_utils.get_quant_config(
        model_config, vllm.config.LoadConfig())


def fused_moe(quant_config, prefix: str = PREFIX):
    from vllm.model_executor.layers.fused_moe.layer import FusedMoE
    with vllm.config.set_current_vllm_config(vllm.config.VllmConfig()):
        return FusedMoE(num_experts=EXPERTS,
                        top_k=TOP_K,
                        hidden_size=HIDDEN,
                        intermediate_size=MOE_INTERMEDIATE,
                        params_dtype=torch.float16,
                        tp_size=1,
                        dp_size=1,
                        ep_size=1,
                        quant_config=quant_config,
                        prefix=prefix)
