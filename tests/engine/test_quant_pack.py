"""The 4-bit packing of tests/support/quant_pack.py against vLLM's own
unpacking, and the quantized tiny checkpoints (tiny_models.QUANTIZED), on
the CPU.

vLLM's side comes from the tree under test (VLLM_VOLTA_TREE, default
upstream/): AutoAWQ's column order as vLLM's awq_pack writes it, the
arithmetic of awq_triton's dequantize kernel redone in torch, moe_wna16's
AWQ converter; for compressed-tensors vLLM's
unpack_quantized_values_into_int32 with the uint4b8 type the W4A16 scheme
gives the checkpoint, and the compressed-tensors library's own unpacker;
for GPTQ vLLM's gptq_pack and pack_cols, the zero + 1 of the GPTQ kernels
and moe_wna16's GPTQ converter.
"""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from tests.support import quant_pack, tiny_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vllm_tree():
    tree = Path(os.environ.get("VLLM_VOLTA_TREE") or ROOT / "upstream")
    if not tree.is_absolute():
        tree = (ROOT / tree).resolve()
    if not (tree / "vllm" / "__init__.py").is_file():
        pytest.skip(f"no vLLM tree at {tree} (nox -s apply)")
    if str(tree) not in sys.path:
        sys.path.insert(0, str(tree))
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    return tree


def weight(out, inp, seed=0):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)) * 0.05


def test_awq_packing_matches_vllm_awq_pack(vllm_tree):
    from vllm.model_executor.layers.quantization.utils.quant_utils import (
        awq_pack)
    w = weight(96, 256)
    tensors = quant_pack.awq_quantize(w, 64)
    q, zeros = quant_pack.awq_unpack(tensors)
    assert tensors["qweight"].dtype == tensors["qzeros"].dtype == torch.int32
    assert tuple(tensors["qweight"].shape) == (256, 96 // 8)
    assert tuple(tensors["qzeros"].shape) == (256 // 64, 96 // 8)
    assert tuple(tensors["scales"].shape) == (256 // 64, 96)
    assert tensors["scales"].dtype == torch.float16
    assert torch.equal(tensors["qweight"],
                       awq_pack(q.to(torch.int32), 4, 256, 96))
    assert torch.equal(tensors["qzeros"],
                       awq_pack(zeros.to(torch.int32), 4, 256 // 64, 96))


def test_awq_dequantize_matches_the_triton_kernel_math(vllm_tree):
    """awq_dequantize_kernel: nibble shifts from the reverse AWQ order
    [0, 4, 1, 5, 2, 6, 3, 7] * 4, (q - z) * s per group of rows."""
    w = weight(64, 256, seed=1)
    tensors = quant_pack.awq_quantize(w, 128)
    reverse = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7]) * 4

    def unpack(x):
        x = x.to(torch.int64) & 0xFFFFFFFF
        return ((x[..., None] >> reverse) & 0xF).reshape(x.shape[0], -1)

    q = unpack(tensors["qweight"])
    z = unpack(tensors["qzeros"]).repeat_interleave(128, 0)
    s = tensors["scales"].repeat_interleave(128, 0)
    kernel = ((q - z).half() * s).T  # the kernel computes in fp16
    ours = quant_pack.awq_dequantize(tensors)
    assert torch.equal(kernel, ours.half())
    # 4-bit asymmetric: within half a step of the original.
    step = tensors["scales"].float().repeat_interleave(128, 0).T
    assert ((ours - w).abs() <= step / 2 + 1e-6).all()


def moe_wna16_loader(monkeypatch, method: str, has_zp: bool,
                     intermediate: int):
    """moe_wna16's expert weight loader for a 4-bit ``method`` checkpoint,
    with the tensors it hands on collected by weight name instead of
    copied into a layer."""
    from vllm.model_executor.layers.quantization import moe_wna16
    layer = types.SimpleNamespace(
        quant_config=types.SimpleNamespace(has_zp=has_zp,
                                           linear_quant_method=method,
                                           weight_bits=4),
        intermediate_size_per_partition=intermediate,
        group_size_div_factor=1, tp_size=1)
    got = {}

    def inner(param, loaded_weight, weight_name, shard_id, expert_id):
        got[weight_name] = loaded_weight

    monkeypatch.setattr(moe_wna16, "get_tp_group",
                        lambda: types.SimpleNamespace(device="cpu"))
    monkeypatch.setattr(moe_wna16, "get_tensor_model_parallel_rank",
                        lambda: 0)
    return moe_wna16.MoeWNA16Method.get_weight_loader(layer, inner), got


def test_awq_matches_moe_wna16_converter(vllm_tree, monkeypatch):
    """moe_wna16's AWQ converter turns qweight into [out, in / 2] bytes,
    low nibble first: the same 4-bit values."""
    tensors = quant_pack.awq_quantize(weight(64, 128, seed=2), 128)
    q, _ = quant_pack.awq_unpack(tensors)
    loader, got = moe_wna16_loader(monkeypatch, "awq", True, 64)
    loader(None, tensors["qweight"], "w2_qweight", "w2", 0)
    b = got["w2_qweight"].to(torch.int64)
    assert torch.equal(torch.stack([b & 0xF, b >> 4], -1).reshape(64, 128),
                       q.T)


def test_compressed_tensors_packing_matches_vllm_unpack(vllm_tree):
    from vllm.model_executor.layers.quantization.utils.quant_utils import (
        unpack_quantized_values_into_int32)
    from vllm.scalar_type import scalar_types
    w = weight(48, 256, seed=3)
    tensors = quant_pack.ct_quantize(w, 128)
    assert tensors["weight_packed"].dtype == torch.int32
    assert tuple(tensors["weight_packed"].shape) == (48, 256 // 8)
    assert tuple(tensors["weight_scale"].shape) == (48, 256 // 128)
    assert tensors["weight_shape"].tolist() == [48, 256]
    stored = unpack_quantized_values_into_int32(tensors["weight_packed"],
                                                scalar_types.uint4b8,
                                                packed_dim=1)
    q = stored.to(torch.int64) - scalar_types.uint4b8.bias
    assert torch.equal(q, quant_pack.ct_unpack(tensors))
    assert q.min() >= -8 and q.max() <= 7
    ours = quant_pack.ct_dequantize(tensors)
    step = tensors["weight_scale"].float().repeat_interleave(128, 1)
    assert ((ours - w).abs() <= step / 2 + 1e-6).all()


def test_compressed_tensors_packing_matches_the_library():
    ct = pytest.importorskip("compressed_tensors.compressors.quantized_compressors.pack_quantized")
    tensors = quant_pack.ct_quantize(weight(32, 128, seed=4), 64)
    q = ct.unpack_from_int32(tensors["weight_packed"], 4,
                             torch.Size([32, 128]))
    assert torch.equal(q.to(torch.int64), quant_pack.ct_unpack(tensors))


def test_gptq_packing_matches_vllm_gptq_pack(vllm_tree):
    from vllm.model_executor.layers.quantization.utils.quant_utils import (
        gptq_pack, pack_cols, unpack_quantized_values_into_int32)
    from vllm.scalar_type import scalar_types
    w = weight(96, 256, seed=5)
    tensors = quant_pack.gptq_quantize(w, 128)
    assert tensors["qweight"].dtype == tensors["qzeros"].dtype == torch.int32
    assert tuple(tensors["qweight"].shape) == (256 // 8, 96)
    assert tuple(tensors["qzeros"].shape) == (256 // 128, 96 // 8)
    assert tuple(tensors["scales"].shape) == (256 // 128, 96)
    assert tensors["scales"].dtype == torch.float16
    assert tensors["g_idx"].dtype == torch.int32
    assert tensors["g_idx"].tolist() == [i // 128 for i in range(256)]
    q, zeros = quant_pack.gptq_unpack(tensors)
    assert tuple(q.shape) == (256, 96)
    # Packed along the inputs (rows of [in, out]), sequential nibbles.
    assert torch.equal(tensors["qweight"],
                       gptq_pack(q.to(torch.int32), 4, 256, 96))
    assert torch.equal(
        unpack_quantized_values_into_int32(tensors["qweight"],
                                           scalar_types.uint4b8,
                                           packed_dim=0).to(torch.int64), q)
    # v1 zeros: zero - 1 = 7, packed along the outputs.
    assert (zeros == 7).all()
    assert torch.equal(tensors["qzeros"],
                       pack_cols(zeros.to(torch.int32), 4, 256 // 128, 96))
    assert (tensors["qzeros"] == 0x77777777).all()
    # Symmetric: the stored values are q + 8 (uint4b8), -8 unused.
    signed = q - scalar_types.uint4b8.bias
    assert signed.min() >= -7 and signed.max() <= 7
    # The GPTQ (Exllama) kernels dequantize (q - (zero + 1)) * s in fp16.
    s = tensors["scales"].repeat_interleave(128, 0)
    z = zeros.repeat_interleave(128, 0)
    kernel = ((q - (z + 1)).half() * s).T
    ours = quant_pack.gptq_dequantize(tensors)
    assert torch.equal(kernel, ours.half())
    without_g_idx = {k: v for k, v in tensors.items() if k != "g_idx"}
    assert torch.equal(quant_pack.gptq_dequantize(without_g_idx), ours)
    step = tensors["scales"].float().repeat_interleave(128, 0).T
    assert ((ours - w).abs() <= step / 2 + 1e-6).all()


def test_gptq_qweight_nibbles_are_input_rows():
    """A hand-made value: input row 8j + i of output o in nibble i of
    qweight[j, o]."""
    w = torch.zeros(8, 128)
    w[3, 8 * 2 + 5] = 0.875  # output 3, input 21: row j = 2, nibble 5
    tensors = quant_pack.gptq_quantize(w, 128)
    word = int(tensors["qweight"][2, 3]) & 0xFFFFFFFF
    assert (word >> 20) & 0xF == 8 + 7
    assert word & ~(0xF << 20) == 0x88888888 & ~(0xF << 20)
    assert torch.equal(quant_pack.gptq_dequantize(tensors), w)


@pytest.mark.parametrize("has_zp", [True, False])
def test_gptq_matches_moe_wna16_converter(vllm_tree, monkeypatch, has_zp):
    """moe_wna16's GPTQ converter turns qweight into [out, in / 2] bytes,
    low nibble first, and qzeros (+1, the v1 offset) into [out / 2, groups]
    bytes; the weight it stands for is quant_pack's. Symmetric (no zero
    points) it drops qzeros and the kernels take 8."""
    w = weight(64, 256, seed=6)
    tensors = quant_pack.gptq_quantize(w, 128)
    loader, got = moe_wna16_loader(monkeypatch, "gptq", has_zp, 256)
    zeros_param = torch.nn.Parameter(torch.zeros(1, 64 // 2, 2,
                                                 dtype=torch.uint8),
                                     requires_grad=False)
    for suffix in ("qweight", "scales", "g_idx"):
        loader(None, tensors[suffix], f"w2_{suffix}", "w2", 0)
    loader(zeros_param, tensors["qzeros"], "w2_qzeros", "w2", 0)
    assert "w2_g_idx" not in got
    b = got["w2_qweight"].to(torch.int64)
    q = torch.stack([b & 0xF, b >> 4], -1).reshape(64, 256)
    s = got["w2_scales"].float()
    assert tuple(s.shape) == (64, 2)
    zb = zeros_param.data[0].to(torch.int64)
    if has_zp:
        z = torch.stack([zb & 0xF, zb >> 4], 1).reshape(64, 2)
        assert (z == 8).all()
    else:
        assert (zb == 0).all()  # not loaded: the kernels use 8
        z = torch.full((64, 2), 8)
    moe = (q - z.repeat_interleave(128, 1)).float() * \
        s.repeat_interleave(128, 1)
    assert torch.equal(moe, quant_pack.gptq_dequantize(tensors))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tinyq")
    for name in tiny_models.QUANTIZED:
        tiny_models.make_quantized(name, root)
    return root


def test_quantized_checkpoints_and_their_references(quantized):
    from safetensors.torch import load_file
    for name, spec in tiny_models.QUANTIZED.items():
        config = json.loads((quantized / name / "config.json").read_text())
        qc = config["quantization_config"]
        reference = tiny_models.reference_dir(quantized, name)
        ref_config = json.loads((reference / "config.json").read_text())
        assert "quantization_config" not in ref_config
        assert ref_config["architectures"] == config["architectures"]
        packed = load_file(quantized / name / "model.safetensors")
        ref = load_file(reference / "model.safetensors")
        if spec.scheme == "awq":
            assert qc["quant_method"] == "awq" and qc["zero_point"]
            suffixes = ("qweight", "qzeros", "scales")
            dequantize = quant_pack.awq_dequantize
        elif spec.scheme == "gptq":
            assert qc["quant_method"] == "gptq" and qc["sym"]
            assert (qc["bits"], qc["group_size"], qc["desc_act"],
                    qc["checkpoint_format"]) == (4, 128, False, "gptq")
            suffixes = ("qweight", "qzeros", "scales", "g_idx")
            dequantize = quant_pack.gptq_dequantize
        else:
            assert qc["quant_method"] == "compressed-tensors"
            assert qc["format"] == "pack-quantized"
            group = qc["config_groups"]["group_0"]["weights"]
            assert (group["num_bits"], group["strategy"]) == (4, "group")
            suffixes = ("weight_packed", "weight_scale", "weight_shape")
            dequantize = quant_pack.ct_dequantize
        modules = [k[:-len(".weight")] for k in ref
                   if tiny_models.quantized_module(k)]
        assert any(".self_attn.q_proj" in m for m in modules)
        if spec.family == "qwen2_moe":
            assert any(".mlp.experts.7.down_proj" in m for m in modules)
            assert "model.layers.0.mlp.gate.weight" in packed  # router: fp16
        if spec.family == "mixtral":
            for p in ("w1", "w2", "w3"):
                assert ("model.layers.1.block_sparse_moe.experts.3."
                        f"{p}") in modules
            # router: fp16
            assert "model.layers.0.block_sparse_moe.gate.weight" in packed
            assert not any(".gate." in m for m in modules)
        for module in modules:
            parts = {s: packed[f"{module}.{s}"] for s in suffixes}
            assert f"{module}.weight" not in packed
            assert torch.equal(dequantize(parts).half(),
                               ref[f"{module}.weight"]), module
        # Every tensor is either packed or kept as it was.
        assert len(packed) == len(ref) + (len(suffixes) - 1) * len(modules)
        assert torch.equal(packed["lm_head.weight"], ref["lm_head.weight"])


def test_reference_of_a_quantized_model_loads_in_transformers(quantized):
    from tests.engine import prompts, reference
    model = reference.load(tiny_models.reference_dir(quantized,
                                                     "qwen2_moe-awq"),
                           "generate")
    out = reference.greedy(model, prompts.token_set("base")[1], 4)
    assert len(out.tokens) == 4


def test_vllm_reads_the_quantization_configs(vllm_tree):
    from vllm.model_executor.layers.quantization.awq import AWQConfig
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (  # noqa: E501
        CompressedTensorsConfig)
    awq = AWQConfig.from_config(quant_pack.awq_config(128))
    assert (awq.weight_bits, awq.group_size, awq.zero_point) == (4, 128, True)
    ct = CompressedTensorsConfig.from_config(quant_pack.ct_config(128))
    weights = ct.target_scheme_map["Linear"]["weights"]
    assert (weights.num_bits, weights.group_size, weights.symmetric,
            getattr(weights.strategy, "value", weights.strategy)) == (
                4, 128, True, "group")
    assert ct.quant_format == "pack-quantized" and ct.ignore == ["lm_head"]
    assert ct._is_wNa16_group_channel(weights, None)
    from vllm.model_executor.layers.quantization.gptq import GPTQConfig
    from vllm.model_executor.layers.quantization.moe_wna16 import (
        MoeWNA16Config)
    gptq_config = quant_pack.gptq_config(128)
    gptq = GPTQConfig.from_config(gptq_config)
    assert (gptq.weight_bits, gptq.group_size, gptq.desc_act,
            gptq.lm_head_quantized, gptq.dynamic) == (4, 128, False, False,
                                                       {})
    assert MoeWNA16Config.is_moe_wna16_compatible(gptq_config)


def test_quantized_checkpoints_load_in_vllm_on_volta(vllm_tree, quantized):
    """vLLM (capability faked to 7.0, CPU, no kernel run) builds each tiny
    4-bit model with the methods the patches give it and loads every
    tensor; the loaded tensors dequantize to the reference's weights."""
    import subprocess
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engine.quant_load", "--models",
         str(quantized), "--tree", str(vllm_tree), *tiny_models.QUANTIZED],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    results = {r["name"]: r for r in (
        json.loads(line[len("RESULT "):])
        for line in proc.stdout.splitlines() if line.startswith("RESULT "))}
    assert proc.returncode == 0 and len(results) == len(
        tiny_models.QUANTIZED) == 6, proc.stderr[-3000:]
    expect = {
        "llama-awq": ({"AWQLinearMethod"}, None),
        "qwen2_moe-awq": ({"AWQLinearMethod", "MoeWNA16Method"},
                          "w13_qzeros"),
        "llama-w4a16": ({"CompressedTensorsLinearMethod"}, None),
        "qwen2_moe-w4a16": ({"CompressedTensorsLinearMethod",
                             "CompressedTensorsWNA16MoEMethod"},
                            "w13_weight_packed"),
        # GPTQ resolves to `gptq` on 7.0 (GPTQ-Marlin needs 8.0); its MoE
        # layers take moe_wna16, symmetric: no expert zero points.
        "qwen2_moe-gptq": ({"GPTQLinearMethod", "MoeWNA16Method"},
                           "w13_qweight"),
        "mixtral-gptq": ({"GPTQLinearMethod", "MoeWNA16Method"},
                         "w13_qweight"),
    }
    for name, (methods, expert_param) in expect.items():
        r = results[name]
        assert methods <= set(r["methods"]), r
        assert r["dtype"] == "torch.float16" and r["dequantized_equal"], r
        # The attention's KV-cache scales keep their defaults (no
        # kv_cache_scheme) and the WNA16 MoE method's act-order tensors
        # stay unused (no actorder); everything else loaded.
        assert not [p for p in r["unloaded"]
                    if not (".attn." in p and p.endswith("_scale"))
                    and "g_idx" not in p], r
        if expert_param:
            assert expert_param in r["experts"], r
        if name.endswith("-gptq"):
            assert r["expert_dequantized_equal"], r
            assert r["experts"]["w13_qzeros"] == [0], r  # sym: unused
            assert r["experts"]["w13_scales"][1:] == [
                2 * (128 if "qwen2" in name else 512), 256 // 128], r
    # Mixtral stays MixtralForCausalLM (FusedMoE), not QuantMixtral.
    assert results["mixtral-gptq"]["arch"] == "MixtralForCausalLM"
    assert results["mixtral-gptq"]["experts_module"] == \
        "model.layers.0.block_sparse_moe.experts"
