"""AWQ checkpoints on Volta: the Triton AWQ kernels, MoE on moe_wna16.

Patch: "awq: run AWQ checkpoints on compute capability 7.0 with Triton
kernels" (Tier: recommended).

vLLM 0.9.2 refuses AWQ below compute capability 7.5 (the CUDA AWQ kernels
assert on sm_70), and moe_wna16 refuses AWQ MoE layers for the same
minimum. The patch lowers the minimum to 7.0 and, below 7.5, runs the
Triton kernels of awq_triton.py: the fused awq_gemm (fp32 dot operands on
7.x, which Triton 3.3.0 can compile) for up to AWQ_TRITON_GEMM_MAX_TOKENS
tokens, dequantize + fp16 matmul above that. AWQ MoE layers take the
moe_wna16 method below 8.0 instead of Marlin MoE.

Runs on CPU like test_gptq_moe_volta.py (helpers in moe_quant.py); the
Triton kernels are replaced by stand-ins: the launch recorder, or a torch
version of the dequantize kernel, so the dispatch and the numerics of the
dequantize + matmul path are checked without a GPU.
"""
import types

import pytest
import torch

from .fakes import LaunchRecorder
from .moe_quant import (A100, EXPERTS, HIDDEN, MOE_INTERMEDIATE, V100,
                        fused_moe, quant_config_of, tiny_qwen3_moe,
                        tree_on_pythonpath)

import vllm.config  # noqa: E402,I001
import vllm.model_executor.layers.quantization.awq as awq  # noqa: E402
import vllm.model_executor.layers.quantization.awq_marlin  # noqa: E402,F401
import vllm.model_executor.layers.quantization.awq_triton as awq_triton  # noqa: E402

AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128,
       "zero_point": True, "version": "gemm"}
# AutoAWQ packs eight output columns per int32 in this order.
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


@pytest.fixture(autouse=True)
def _tree_on_pythonpath(monkeypatch):
    tree_on_pythonpath(monkeypatch)


def awq_model(tmp_path):
    config = tiny_qwen3_moe()
    config["quantization_config"] = dict(AWQ)
    return quant_config_of(tmp_path, config)


def checked_quant_config(tmp_path):
    """The quant config as the engine gets it: VllmConfig checks the GPU's
    capability against the method's minimum."""
    config = tiny_qwen3_moe()
    config["quantization_config"] = dict(AWQ)
    (tmp_path / "config.json").write_text(__import__("json").dumps(config))
    model_config = vllm.config.ModelConfig(model=str(tmp_path), dtype="auto")
    return model_config.quantization, vllm.config.VllmConfig.\
        get_quantization_config(model_config, vllm.config.LoadConfig())


def pack_awq(q: torch.Tensor) -> torch.Tensor:
    """int 0..15 [K, N] -> AutoAWQ int32 [K, N // 8]."""
    k, n = q.shape
    q = q.to(torch.int64).reshape(k, n // 8, 8)
    packed = torch.zeros(k, n // 8, dtype=torch.int64)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= q[..., column] << (4 * nibble)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


def torch_dequantize(qweight, scales, zeros):
    """What awq_dequantize_kernel computes, in torch."""
    shifts = torch.tensor([0, 16, 4, 20, 8, 24, 12, 28])  # [0,4,1,5,..]*4

    def unpack(x):
        x = x.to(torch.int64) & 0xFFFFFFFF
        return ((x[..., None] >> shifts) & 0xF).reshape(x.shape[0], -1)

    group = qweight.shape[0] // scales.shape[0]
    w = unpack(qweight)
    z = unpack(zeros).repeat_interleave(group, 0)
    s = scales.repeat_interleave(group, 0)
    return ((w - z).to(scales.dtype) * s).to(scales.dtype)


class TorchDequantize:
    """Stands in for awq_dequantize_kernel: fills the result in torch."""

    def __init__(self):
        self.calls = 0

    def __getitem__(self, grid):
        def launch(qweight, scales, zeros, group_size, result, *args,
                   **kwargs):
            self.calls += 1
            result.copy_(torch_dequantize(qweight, scales, zeros))
        return launch


def awq_linear(quant_config, k=256, n=512, seed=0):
    """An AWQ linear layer (the method's own parameters), random weights."""
    gen = torch.Generator().manual_seed(seed)
    method = awq.AWQLinearMethod(quant_config)
    layer = torch.nn.Module()
    method.create_weights(layer, k, [n], k, n, torch.float16,
                          weight_loader=lambda *a: None)
    q = torch.randint(0, 16, (k, n), generator=gen)
    z = torch.randint(0, 16, (k // 128, n), generator=gen)
    s = (torch.rand(k // 128, n, generator=gen) * 0.02 + 0.001).half()
    layer.qweight.data.copy_(pack_awq(q))
    layer.qzeros.data.copy_(pack_awq(z))
    layer.scales.data.copy_(s)
    method.process_weights_after_loading(layer)
    dense = ((q - z.repeat_interleave(128, 0)).float() *
             s.float().repeat_interleave(128, 0))
    return method, layer, dense


# --- the patch ----------------------------------------------------------------


def test_awq_checkpoint_builds_on_volta(gpu, tmp_path):
    """The engine's quant config check passes at 7.0 and the experts of an
    AWQ MoE checkpoint take moe_wna16 with zero points (not Marlin MoE)."""
    gpu(7, V100)
    method, quant_config = checked_quant_config(tmp_path)
    assert method == "awq"  # awq_marlin needs 8.0
    assert quant_config.get_min_capability() == 70
    layer = fused_moe(quant_config)
    assert type(layer.quant_method).__name__ == "MoeWNA16Method"
    config = layer.quant_method.quant_config
    assert (config.linear_quant_method, config.weight_bits,
            config.has_zp) == ("awq", 4, True)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes["w13_qweight"] == (EXPERTS, 2 * MOE_INTERMEDIATE,
                                     HIDDEN // 2)
    assert shapes["w13_qzeros"] == (EXPERTS, MOE_INTERMEDIATE, HIDDEN // 128)


def test_awq_small_batch_runs_the_fused_gemm_with_fp32_dot(
        gpu, tmp_path, monkeypatch):
    # The measured default (0) never takes the fused kernel; an operator's
    # VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS does, with fp32 dot operands.
    monkeypatch.setenv("VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS", "16")
    gpu(7, V100)
    _, quant_config = awq_model(tmp_path)
    method, layer, _ = awq_linear(quant_config)
    recorder = LaunchRecorder()
    monkeypatch.setattr(awq_triton, "awq_gemm_kernel", recorder)
    out = method.apply(layer, torch.zeros(3, 256, dtype=torch.float16))
    assert out.shape == (3, 512) and out.dtype == torch.float16
    (launch, ) = recorder.calls
    assert launch["DOT_FP32"] is True
    assert launch["BLOCK_SIZE_M"] == 16
    assert launch["SPLIT_K"] == 8


def test_awq_large_batch_dequantizes_and_matmuls(gpu, tmp_path, monkeypatch):
    """Above the threshold: the Triton dequantize kernel (here its torch
    stand-in) and an fp16 matmul; the result is the dequantized GEMM."""
    gpu(7, V100)
    _, quant_config = awq_model(tmp_path)
    method, layer, dense = awq_linear(quant_config)
    gemm, dequantize = LaunchRecorder(), TorchDequantize()
    monkeypatch.setattr(awq_triton, "awq_gemm_kernel", gemm)
    monkeypatch.setattr(awq_triton, "awq_dequantize_kernel", dequantize)
    # CPU matmul in fp16 is slow and not what a GPU does: compute in fp32.
    monkeypatch.setattr(
        torch, "matmul",
        lambda a, b, _mm=torch.matmul: _mm(a.float(), b.float()).to(a.dtype))
    x = (torch.randn(awq.AWQ_TRITON_GEMM_MAX_TOKENS + 1, 256,
                     generator=torch.Generator().manual_seed(1)) *
         0.5).half()
    out = method.apply(layer, x)
    assert (dequantize.calls, len(gemm.calls)) == (1, 0)
    expect = x.float() @ dense
    # fp16 output of an fp32 product: one fp16 rounding (2^-11 relative).
    torch.testing.assert_close(out.float(), expect, rtol=2e-3, atol=2e-3)


def test_awq_threshold_env_override(gpu, tmp_path, monkeypatch):
    gpu(7, V100)
    _, quant_config = awq_model(tmp_path)
    method, layer, _ = awq_linear(quant_config)
    gemm, dequantize = LaunchRecorder(), TorchDequantize()
    monkeypatch.setattr(awq_triton, "awq_gemm_kernel", gemm)
    monkeypatch.setattr(awq_triton, "awq_dequantize_kernel", dequantize)
    monkeypatch.setenv("VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS", "0")
    method.apply(layer, torch.zeros(1, 256, dtype=torch.float16))
    assert (dequantize.calls, len(gemm.calls)) == (1, 0)
    monkeypatch.setenv("VLLM_VOLTA_AWQ_GEMM_MAX_TOKENS", "64")
    method.apply(layer, torch.zeros(40, 256, dtype=torch.float16))
    assert gemm.calls[-1]["BLOCK_SIZE_M"] == 32


def _record_gemm_launch(monkeypatch) -> dict:
    """awq_gemm_kernel launches record the output buffer's dtype and the
    launch's keyword arguments into the returned dict (nothing runs)."""
    seen = {}

    class Recorder(LaunchRecorder):
        def __getitem__(self, grid):
            def launch(a, b, c, *args, **kwargs):
                seen["c"] = c.dtype
                seen.update(kwargs)
            return launch

    monkeypatch.setattr(awq_triton, "awq_gemm_kernel", Recorder())
    return seen


def _small_gemm():
    """awq_gemm_triton on 2 tokens, 256 inputs, 512 outputs, split-K 8."""
    return awq_triton.awq_gemm_triton(
        torch.zeros(2, 256, dtype=torch.float16),
        torch.zeros(256, 64, dtype=torch.int32),
        torch.zeros(2, 512, dtype=torch.float16),
        torch.zeros(2, 64, dtype=torch.int32), 8)


def test_awq_gemm_partial_sums_in_fp32_on_volta(gpu, monkeypatch):
    gpu(7, V100)
    seen = _record_gemm_launch(monkeypatch)
    out = _small_gemm()
    assert seen["c"] == torch.float32 and seen["DOT_FP32"] is True
    assert out.dtype == torch.float16


def test_awq_group_size_the_triton_kernels_lack_is_refused(gpu, tmp_path):
    """The Triton AWQ kernels take groups of 32, 64 or 128 inputs (or one
    group per layer): another group size is refused when the layer is
    made, in one line, instead of an assert at the first forward pass."""
    gpu(7, V100)
    config = tiny_qwen3_moe()
    config["quantization_config"] = dict(AWQ, group_size=256)
    _, quant_config = quant_config_of(tmp_path, config)
    layer = torch.nn.Module()
    with pytest.raises(ValueError) as excinfo:
        awq.AWQLinearMethod(quant_config).create_weights(
            layer, 512, [512], 512, 512, torch.float16,
            weight_loader=lambda *a: None)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "group size 256" in message and "7.0" in message
    assert "32, 64 or 128" in message


# --- no change elsewhere --------------------------------------------------------


def test_awq_gemm_unchanged_on_ampere(gpu, monkeypatch):
    """Upstream behaviour: on 8.0 the kernel keeps fp16 operands and fp16
    partial sums (the flag is only passed where it is needed)."""
    gpu(8, A100)
    seen = _record_gemm_launch(monkeypatch)
    _small_gemm()
    assert seen["c"] == torch.float16 and not seen.get("DOT_FP32")


def test_awq_moe_unchanged_on_ampere(gpu, tmp_path, monkeypatch):
    """Upstream behaviour: 8.0 takes awq_marlin and its Marlin MoE."""
    gpu(8, A100)
    from vllm.model_executor.layers.quantization import awq_marlin
    monkeypatch.setattr(awq_marlin.AWQMoEMethod, "create_weights",
                        lambda self, layer, **kwargs: None)  # needs a GPU
    method, quant_config = awq_model(tmp_path)
    assert method == "awq_marlin"
    layer = fused_moe(quant_config)
    assert type(layer.quant_method).__name__ == "AWQMoEMethod"


def test_awq_moe_weights_load_on_volta(gpu, tmp_path, monkeypatch):
    """An expert's AWQ tensors land in moe_wna16's layout: row n of
    w13_qweight holds output n's 4-bit weights, two inputs a byte."""
    gpu(7, V100)
    from vllm.model_executor.layers.quantization import moe_wna16
    _, quant_config = awq_model(tmp_path)
    layer = fused_moe(quant_config)
    monkeypatch.setattr(moe_wna16, "get_tp_group",
                        lambda: types.SimpleNamespace(device="cpu"))
    monkeypatch.setattr(moe_wna16, "get_tensor_model_parallel_rank",
                        lambda: 0)
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (HIDDEN, MOE_INTERMEDIATE), generator=gen)
    param = layer.w13_qweight
    param.weight_loader(param, pack_awq(q), "w13_qweight", shard_id="w1",
                        expert_id=2)
    got = layer.w13_qweight[2, :MOE_INTERMEDIATE].to(torch.int64)
    unpacked = torch.stack([got & 0xF, got >> 4], dim=-1).reshape(
        MOE_INTERMEDIATE, HIDDEN)
    assert torch.equal(unpacked, q.T)
