"""bitsandbytes MoE: refused with a message that says what to use instead.

Patch: "bitsandbytes: refuse MoE layers with a message" (Tier: recommended).

BitsAndBytesConfig.get_quant_method returns None for FusedMoE layers, so a
bitsandbytes MoE model (a pre-quantized bnb checkpoint, or
`--quantization bitsandbytes` on an unquantized one) stops at a bare
`assert quant_method is not None` in fused_moe/layer.py. On a V100
bitsandbytes is one of the few quantizations that run (min capability
7.0), so users reach this. The patch refuses those layers naming the layer
and the alternatives; linear layers are unchanged.

Runs on CPU like test_gptq_moe_volta.py (helpers in moe_quant.py).
"""
import json
from pathlib import Path

import pytest

from .moe_quant import (V100, fused_moe, tiny_qwen3_moe, tree_on_pythonpath)

import vllm.config  # noqa: E402,I001
import vllm.model_executor.model_loader.weight_utils as weight_utils  # noqa: E402


@pytest.fixture(autouse=True)
def _tree_on_pythonpath(monkeypatch):
    tree_on_pythonpath(monkeypatch)

BNB_4BIT = {"quant_method": "bitsandbytes", "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": "float16"}


def bnb_quant_config(tmp_path: Path, prequantized: bool):
    config = tiny_qwen3_moe()
    if prequantized:
        config["quantization_config"] = BNB_4BIT
    else:
        del config["quantization_config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model_config = vllm.config.ModelConfig(
        model=str(tmp_path),
        dtype="auto",
        quantization=None if prequantized else "bitsandbytes")
    assert model_config.quantization == "bitsandbytes"
    return weight_utils.get_quant_config(
        model_config, vllm.config.LoadConfig(load_format="bitsandbytes"))


@pytest.mark.parametrize("prequantized", [True, False],
                         ids=["bnb-checkpoint", "in-flight"])
def test_bnb_moe_refused_with_a_message(gpu, tmp_path, prequantized):
    gpu(7, V100)
    quant_config = bnb_quant_config(tmp_path, prequantized)
    with pytest.raises(NotImplementedError) as excinfo:
        fused_moe(quant_config)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "bitsandbytes" in message and "model.layers.0.mlp.experts" in (
        message)
    assert "unquantized checkpoint" in message and "GPTQ" in message


def test_bnb_linear_layers_unchanged(gpu, tmp_path, monkeypatch):
    """Upstream behaviour (passes on both trees)."""
    gpu(7, V100)
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.quantization import bitsandbytes
    # The real method imports the bitsandbytes package (GPU-only).
    monkeypatch.setattr(bitsandbytes, "BitsAndBytesLinearMethod",
                        lambda config: "bnb linear method")
    quant_config = bnb_quant_config(tmp_path, prequantized=True)
    method = quant_config.get_quant_method(
        ReplicatedLinear.__new__(ReplicatedLinear),
        "model.layers.0.self_attn.o_proj")
    assert method == "bnb linear method"
