"""compressed-tensors W4A16/W8A16 on Volta: Exllama dense, moe_wna16 MoE.

Patch: "compressed-tensors: run W4A16/W8A16 on compute capability 7.0"
(Tier: recommended).

vLLM 0.9.2's CompressedTensorsWNA16 needs compute capability 8.0, so a
V100 refuses every compressed-tensors weight-only checkpoint when the model
is built (RuntimeError from _check_scheme_supported), and its MoE method
would pick Marlin MoE, which is not built below 8.0. The patch runs the
linear layers on the Exllama kernel below 8.0 and the experts on the
moe_wna16 kernels, and refuses in one line what those cannot run.

Runs on CPU like test_gptq_moe_volta.py (helpers in moe_quant.py).
"""
import pytest
import torch

from .moe_quant import (A100, EXPERTS, HIDDEN, MOE_INTERMEDIATE, PREFIX,
                        V100, fused_moe, quant_config_of, tiny_qwen3_moe,
                        tree_on_pythonpath)

import vllm.config  # noqa: E402,I001
import vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors  # noqa: E402,F401,E501
import vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe  # noqa: E402,F401,E501
import vllm.model_executor.layers.quantization.compressed_tensors.schemes.compressed_tensors_wNa16  # noqa: E402,F401,E501
import vllm.model_executor.layers.quantization.kernels.mixed_precision  # noqa: E402,F401,E501

LINEAR = "model.layers.0.self_attn.o_proj"


def w4a16(num_bits=4, symmetric=True, strategy="group", group_size=128,
          actorder=None) -> dict:
    """A compressed-tensors weight-only quantization_config, as
    llm-compressor writes it."""
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": num_bits, "type": "int",
                        "symmetric": symmetric, "strategy": strategy,
                        "group_size": group_size if strategy == "group"
                        else None,
                        "dynamic": False, "actorder": actorder,
                        "observer": "minmax"},
            "input_activations": None, "output_activations": None}},
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
    }


@pytest.fixture(autouse=True)
def _tree_on_pythonpath(monkeypatch):
    tree_on_pythonpath(monkeypatch)


def model(tmp_path, **weights):
    config = tiny_qwen3_moe()
    config["quantization_config"] = w4a16(**weights)
    return quant_config_of(tmp_path, config)


def linear(quant_config, prefix=LINEAR):
    from vllm.model_executor.layers.linear import ReplicatedLinear
    with vllm.config.set_current_vllm_config(vllm.config.VllmConfig()):
        return ReplicatedLinear(512, HIDDEN, bias=False,
                                params_dtype=torch.float16,
                                quant_config=quant_config, prefix=prefix)


# --- the patch ----------------------------------------------------------------


def test_w4a16_builds_on_volta(gpu, tmp_path):
    """Linear layers get the Exllama kernel, experts the moe_wna16 method."""
    gpu(7, V100)
    method, quant_config = model(tmp_path)
    assert method == "compressed-tensors"
    layer = linear(quant_config)
    assert type(layer.scheme).__name__ == "CompressedTensorsWNA16"
    assert type(layer.scheme.kernel).__name__ == "ExllamaLinearKernel"
    assert tuple(layer.weight_packed.shape) == (HIDDEN, 512 // 8)
    assert tuple(layer.weight_scale.shape) == (HIDDEN, 512 // 128)
    moe = fused_moe(quant_config)
    assert type(moe.quant_method).__name__ == \
        "CompressedTensorsWNA16MoEMethod"
    assert tuple(moe.w13_weight_packed.shape) == (EXPERTS, HIDDEN // 8,
                                                  2 * MOE_INTERMEDIATE)


def test_w8a16_builds_on_volta(gpu, tmp_path):
    gpu(7, V100)
    _, quant_config = model(tmp_path, num_bits=8)
    layer = linear(quant_config)
    assert type(layer.scheme.kernel).__name__ == "ExllamaLinearKernel"
    moe = fused_moe(quant_config)
    assert moe.quant_method.num_bits == 8


@pytest.mark.parametrize("weights,what", [
    ({"symmetric": False}, "asymmetric"),
    ({"strategy": "channel"}, "channelwise"),
])
def test_w4a16_linear_that_cannot_run_is_refused(gpu, tmp_path, weights,
                                                 what):
    gpu(7, V100)
    _, quant_config = model(tmp_path, **weights)
    with pytest.raises(ValueError) as excinfo:
        linear(quant_config)
    message = str(excinfo.value)
    assert "\n" not in message
    assert what in message and "7.0" in message
    assert "Exllama" in message and "GPTQ or AWQ" in message


@pytest.mark.parametrize("weights,what", [
    ({"symmetric": False}, "asymmetric"),
    ({"strategy": "channel"}, "strategy=channel"),
    ({"actorder": "group"}, "actorder=group"),
])
def test_w4a16_moe_that_cannot_run_is_refused(gpu, tmp_path, weights, what):
    gpu(7, V100)
    _, quant_config = model(tmp_path, **weights)
    with pytest.raises(ValueError) as excinfo:
        fused_moe(quant_config)
    message = str(excinfo.value)
    assert "\n" not in message
    assert PREFIX in message and what in message
    assert "moe_wna16" in message and "symmetric" in message


# --- no change elsewhere --------------------------------------------------------


def test_w4a16_moe_unchanged_on_ampere(gpu, tmp_path, monkeypatch):
    """Upstream behaviour (passes on both trees): 8.0 takes Marlin MoE."""
    gpu(8, A100)
    from vllm.model_executor.layers.quantization.compressed_tensors import (
        compressed_tensors_moe)
    monkeypatch.setattr(
        compressed_tensors_moe.CompressedTensorsWNA16MarlinMoEMethod,
        "create_weights", lambda self, layer, **kwargs: None)  # needs a GPU
    _, quant_config = model(tmp_path)
    moe = fused_moe(quant_config)
    assert type(moe.quant_method).__name__ == \
        "CompressedTensorsWNA16MarlinMoEMethod"


def test_w4a16_linear_unchanged_on_ampere(gpu, tmp_path):
    """Upstream behaviour (passes on both trees): 8.0 picks its kernel
    with choose_mp_linear_kernel (Exllama comes last)."""
    gpu(8, A100)
    _, quant_config = model(tmp_path)
    layer = linear(quant_config)
    assert type(layer.scheme.kernel).__name__ != "ExllamaLinearKernel"
