"""GPTQ MoE checkpoints on Volta: the experts run on the moe_wna16 kernels.

Patch: "gptq: run the experts of GPTQ MoE models on the moe_wna16 kernels"
(Tier: critical).

GPTQ-Marlin needs compute capability 8.0, so on a V100 a GPTQ checkpoint
resolves to the `gptq` method, whose get_quant_method returns None for
FusedMoE layers: vLLM 0.9.2 stops at a bare `assert quant_method is not
None` in fused_moe/layer.py (Qwen2/3-MoE, DeepSeek, ... GPTQ). The patch
gives those layers the moe_wna16 method (what `--quantization moe_wna16`
gives), and refuses the checkpoints moe_wna16 cannot run with a one-line
message.

Tests marked "upstream behaviour" pass on both trees.

Runs on CPU: vllm._C is stubbed; the platform is a CUDA platform of the
given capability, swapped in wherever vLLM holds `current_platform`
(helpers in moe_quant.py).
"""
import types

import pytest
import torch

from .moe_quant import (A100, EXPERTS, HIDDEN, MOE_INTERMEDIATE, PREFIX,
                        V100, fused_moe, quant_config_of, tiny_qwen3_moe,
                        tree_on_pythonpath)

import vllm.model_executor.layers.quantization.moe_wna16 as moe_wna16  # noqa: E402,I001


@pytest.fixture(autouse=True)
def _tree_on_pythonpath(monkeypatch):
    tree_on_pythonpath(monkeypatch)


# --- the patch ----------------------------------------------------------------


def test_gptq_moe_builds_on_volta(gpu, tmp_path):
    gpu(7, V100)
    method, quant_config = quant_config_of(tmp_path, tiny_qwen3_moe())
    assert method == "gptq"  # upstream: GPTQ-Marlin needs 8.0
    layer = fused_moe(quant_config)
    assert type(layer.quant_method).__name__ == "MoeWNA16Method"
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    # int4 packed two to a byte, one scale per 128 inputs
    assert shapes["w13_qweight"] == (EXPERTS, 2 * MOE_INTERMEDIATE,
                                     HIDDEN // 2)
    assert shapes["w2_qweight"] == (EXPERTS, HIDDEN, MOE_INTERMEDIATE // 2)
    assert shapes["w13_scales"] == (EXPERTS, 2 * MOE_INTERMEDIATE,
                                    HIDDEN // 128)
    assert layer.quant_method.quant_config.has_zp is False
    assert layer.quant_method.quant_config.weight_bits == 4


def test_gptq_moe_8bit_asymmetric_on_volta(gpu, tmp_path):
    gpu(7, V100)
    _, quant_config = quant_config_of(tmp_path,
                                      tiny_qwen3_moe(bits=8, sym=False))
    layer = fused_moe(quant_config)
    config = layer.quant_method.quant_config
    assert (config.weight_bits, config.has_zp) == (8, True)
    assert tuple(layer.w13_qzeros.shape) == (EXPERTS, 2 * MOE_INTERMEDIATE,
                                             HIDDEN // 128)


def test_gptq_moe_without_sym_loads_zero_points(gpu, tmp_path):
    gpu(7, V100)
    config = tiny_qwen3_moe()
    del config["quantization_config"]["sym"]
    _, quant_config = quant_config_of(tmp_path, config)
    layer = fused_moe(quant_config)
    assert layer.quant_method.quant_config.has_zp is True


def test_gptq_moe_checkpoint_weights_load_on_volta(gpu, tmp_path,
                                                    monkeypatch):
    """An expert's GPTQ tensors, under the names Qwen3-MoE's load_weights
    gives them, land in the moe_wna16 parameters."""
    gpu(7, V100)
    _, quant_config = quant_config_of(tmp_path, tiny_qwen3_moe())
    layer = fused_moe(quant_config)
    monkeypatch.setattr(moe_wna16, "get_tp_group",
                        lambda: types.SimpleNamespace(device="cpu"))
    monkeypatch.setattr(moe_wna16, "get_tensor_model_parallel_rank",
                        lambda: 0)
    generator = torch.Generator().manual_seed(0)

    def int32(*shape):
        return torch.randint(-2**31, 2**31 - 1, shape, dtype=torch.int32,
                             generator=generator)

    # GPTQ layout: qweight (in // 8, out) int32, scales (in // 128, out)
    gate = int32(HIDDEN // 8, MOE_INTERMEDIATE)
    down = int32(MOE_INTERMEDIATE // 8, HIDDEN)
    gate_scales = torch.rand(HIDDEN // 128, MOE_INTERMEDIATE,
                             generator=generator).half()
    expert = 3
    for param_name, tensor, shard in [
        ("w13_qweight", gate, "w1"),
        ("w2_qweight", down, "w2"),
        ("w13_scales", gate_scales, "w1"),
        ("w13_qzeros", int32(1, MOE_INTERMEDIATE // 8), "w1"),
        ("w13_g_idx", torch.arange(HIDDEN, dtype=torch.int32), "w1"),
    ]:
        param = getattr(layer, param_name)
        param.weight_loader(param, tensor, param_name, shard_id=shard,
                            expert_id=expert)
    assert torch.equal(layer.w13_qweight[expert, :MOE_INTERMEDIATE],
                       gate.T.contiguous().view(torch.uint8))
    assert torch.equal(layer.w2_qweight[expert],
                       down.T.contiguous().view(torch.uint8))
    assert torch.equal(layer.w13_scales[expert, :MOE_INTERMEDIATE],
                       gate_scales.T)


def test_gptq_moe_dynamic_skip_is_unquantized(gpu, tmp_path):
    """GPTQModel's `dynamic` negative match leaves the experts unquantized,
    as it does for linear layers."""
    gpu(7, V100)
    _, quant_config = quant_config_of(
        tmp_path, tiny_qwen3_moe(dynamic={r"-:.*\.mlp\.experts": {}}))
    layer = fused_moe(quant_config)
    assert type(layer.quant_method).__name__ == "UnquantizedFusedMoEMethod"


@pytest.mark.parametrize("quant,what", [
    ({"desc_act": True}, "desc_act=True"),
    ({"bits": 3}, "3-bit"),
    ({"group_size": -1}, "group_size=-1"),
])
def test_gptq_moe_that_cannot_run_is_refused(gpu, tmp_path, quant, what):
    gpu(7, V100)
    _, quant_config = quant_config_of(tmp_path, tiny_qwen3_moe(**quant))
    with pytest.raises(ValueError) as excinfo:
        fused_moe(quant_config)
    message = str(excinfo.value)
    assert "\n" not in message
    assert PREFIX in message and what in message
    assert "moe_wna16" in message and "desc_act=False" in message


# --- no change elsewhere --------------------------------------------------------


def test_gptq_moe_unchanged_on_ampere(gpu, tmp_path, monkeypatch):
    """Upstream behaviour (passes on both trees): 8.0 takes GPTQ-Marlin."""
    gpu(8, A100)
    from vllm.model_executor.layers.quantization import gptq_marlin
    monkeypatch.setattr(gptq_marlin.GPTQMarlinMoEMethod, "create_weights",
                        lambda self, layer, **kwargs: None)  # needs a GPU
    method, quant_config = quant_config_of(tmp_path, tiny_qwen3_moe())
    assert method == "gptq_marlin"
    layer = fused_moe(quant_config)
    assert type(layer.quant_method).__name__ == "GPTQMarlinMoEMethod"


def test_gptq_linear_layers_unchanged_on_volta(gpu, tmp_path):
    """Upstream behaviour (passes on both trees)."""
    gpu(7, V100)
    from vllm.model_executor.layers.linear import ReplicatedLinear
    _, quant_config = quant_config_of(tmp_path, tiny_qwen3_moe())
    method = quant_config.get_quant_method(
        ReplicatedLinear.__new__(ReplicatedLinear),
        "model.layers.0.self_attn.o_proj")
    assert type(method).__name__ == "GPTQLinearMethod"
