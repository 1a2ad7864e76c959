"""GPTQ Mixtral on Volta: FusedMoE on the moe_wna16 kernels, not the
per-expert loop.

Patch: "model_loader: build GPTQ and moe_wna16 Mixtral with FusedMoE"
(Tier: recommended; needs "gptq: run the experts of GPTQ MoE models on the
moe_wna16 kernels" before it).

vLLM 0.9.2 swaps Mixtral for QuantMixtralForCausalLM (mixtral_quant.py)
under any quantization outside a short list. With `gptq`, what a V100
resolves a GPTQ checkpoint to (GPTQ-Marlin needs 8.0), and with an explicit
`--quantization moe_wna16`, that model runs every expert densely on every
token through per-expert GPTQ linear layers: never the moe_wna16 kernels,
and top_k / num_experts of the expert work wasted. The patch keeps those
two methods on MixtralForCausalLM, whose FusedMoE layers take the
moe_wna16 method.

Runs on CPU like test_gptq_moe_volta.py (helpers in moe_quant.py).
"""
import json
from pathlib import Path

import pytest

from .moe_quant import (A100, V100, fused_moe, tree_on_pythonpath)

import vllm.config  # noqa: E402,I001
import vllm.model_executor.model_loader.utils as loader_utils  # noqa: E402
import vllm.model_executor.model_loader.weight_utils as weight_utils  # noqa: E402


@pytest.fixture(autouse=True)
def _tree_on_pythonpath(monkeypatch):
    tree_on_pythonpath(monkeypatch)


def tiny_mixtral(**quant) -> dict:
    quantization_config = {"quant_method": "gptq", "bits": 4,
                           "group_size": 128, "desc_act": False, "sym": True}
    quantization_config.update(quant)
    return {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "vocab_size": 1000,
        "hidden_size": 256,
        "intermediate_size": 128,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "torch_dtype": "float16",
        "quantization_config": quantization_config,
    }


def resolve(tmp_path: Path, config: dict, quantization=None):
    (tmp_path / "config.json").write_text(json.dumps(config))
    model_config = vllm.config.ModelConfig(model=str(tmp_path),
                                           dtype="auto",
                                           quantization=quantization)
    model_cls, _ = loader_utils.get_model_architecture(model_config)
    return model_config, model_cls


@pytest.mark.parametrize("quantization", [None, "moe_wna16"])
def test_gptq_mixtral_uses_fused_moe_on_volta(gpu, tmp_path, quantization):
    gpu(7, V100)
    model_config, model_cls = resolve(tmp_path, tiny_mixtral(), quantization)
    assert model_config.quantization == (quantization or "gptq")
    assert model_cls.__module__ == "vllm.model_executor.models.mixtral"
    quant_config = weight_utils.get_quant_config(model_config,
                                                 vllm.config.LoadConfig())
    layer = fused_moe(quant_config,
                      prefix="model.layers.0.block_sparse_moe.experts")
    assert type(layer.quant_method).__name__ == "MoeWNA16Method"


def test_gptq_mixtral_unchanged_on_ampere(gpu, tmp_path):
    """Upstream behaviour (passes on both trees): 8.0 takes GPTQ-Marlin and
    MixtralForCausalLM."""
    gpu(8, A100)
    model_config, model_cls = resolve(tmp_path, tiny_mixtral())
    assert model_config.quantization == "gptq_marlin"
    assert model_cls.__module__ == "vllm.model_executor.models.mixtral"


def test_other_quantizations_keep_quant_mixtral(gpu, tmp_path):
    """Upstream behaviour (passes on both trees): methods without a MoE
    method of their own (here bitsandbytes) keep mixtral_quant."""
    gpu(7, V100)
    config = tiny_mixtral()
    config["quantization_config"] = {"quant_method": "bitsandbytes",
                                     "load_in_4bit": True}
    _, model_cls = resolve(tmp_path, config)
    assert model_cls.__module__ == "vllm.model_executor.models.mixtral_quant"
