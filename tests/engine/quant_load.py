"""Build vLLM's model for a tiny 4-bit checkpoint on the CPU and load it.

Run by test_quant_pack.py in a subprocess (it initialises a one-process
gloo group and swaps vLLM's platform for a CUDA GPU of capability 7.0):

    python -m tests.engine.quant_load --models DIR NAME...

For each quantized model (tiny_models.QUANTIZED) it writes the checkpoint,
builds the model class vLLM picks with the quant config vLLM picks, loads
every tensor with the model's own load_weights, and prints one JSON line:
the quant methods the layers got, the parameters of one expert layer, and
whether the loaded tensors dequantize (tests/support/quant_pack.py) to the
reference's weights (for GPTQ, one expert of the moe_wna16 layout too).
Nothing runs a kernel: vllm._C is stubbed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setup(tree: Path) -> None:
    sys.path.insert(0, str(tree))
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
    os.environ["VLLM_USE_V1"] = "0"
    import torch
    import vllm.platforms
    # Modules that hold current_platform, imported before the swap.
    import vllm.model_executor.layers.activation as activation
    import vllm.model_executor.layers.fused_moe.layer  # noqa: F401
    import vllm.model_executor.layers.quantization.awq  # noqa: F401
    import vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors  # noqa: F401,E501
    import vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe  # noqa: F401,E501
    import vllm.model_executor.layers.quantization.compressed_tensors.schemes.compressed_tensors_wNa16  # noqa: F401,E501
    import vllm.model_executor.layers.quantization.gptq  # noqa: F401
    import vllm.model_executor.layers.quantization.gptq_marlin  # noqa: F401
    import vllm.model_executor.layers.quantization.utils.marlin_utils  # noqa: F401,E501
    import vllm.model_executor.layers.quantization.moe_wna16 as moe_wna16
    sys.path.insert(0, str(ROOT / "tests"))
    from patches.fakes import fake_cuda
    platform = fake_cuda(7, 0, "Tesla V100-SXM2-32GB")
    original = vllm.platforms.current_platform
    vllm.platforms._current_platform = platform
    for module in list(sys.modules.values()):
        if getattr(module, "current_platform", None) is original:
            module.current_platform = platform
    # GPTQ's override checks (gptq_bitblas) ask torch for the capability.
    torch.cuda.get_device_capability = lambda device=None: (7, 0)
    # No CUDA op is run: SiluAndMul only looks its op up; the experts'
    # loader stages tensors on the TP group's device.
    activation.SiluAndMul.__init__ = \
        lambda self: torch.nn.Module.__init__(self)
    moe_wna16.get_tp_group = lambda: types.SimpleNamespace(device="cpu")
    from vllm.distributed import (init_distributed_environment,
                                  initialize_model_parallel)
    init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                 distributed_init_method="tcp://127.0.0.1:"
                                 f"{29500 + os.getpid() % 1000}",
                                 backend="gloo")
    initialize_model_parallel(1, 1)


def check(name: str, models: Path) -> dict:
    import torch
    import vllm.config
    from safetensors.torch import load_file
    from vllm.model_executor.model_loader.utils import (
        get_model_architecture, set_default_torch_dtype)

    from tests.support import quant_pack, tiny_models
    spec = tiny_models.QUANTIZED[name]
    directory = tiny_models.make_quantized(name, models)
    model_config = vllm.config.ModelConfig(model=str(directory),
                                           dtype="auto")
    vllm_config = vllm.config.VllmConfig(
        model_config=model_config, load_config=vllm.config.LoadConfig())
    vllm_config.compilation_config.level = 0
    cls, _ = get_model_architecture(model_config)
    with vllm.config.set_current_vllm_config(vllm_config), \
            set_default_torch_dtype(model_config.dtype):
        model = cls(vllm_config=vllm_config)
    tensors = load_file(directory / "model.safetensors")
    loaded = model.load_weights(tensors.items())
    methods = sorted({type(m.quant_method).__name__
                      for m in model.modules()
                      if getattr(m, "quant_method", None) is not None})
    ref = load_file(tiny_models.reference_dir(models, name) /
                    "model.safetensors")
    params = dict(model.named_parameters())
    attn = "model.layers.0.self_attn"
    if spec.scheme in ("awq", "gptq"):
        qkv = {k: params[f"{attn}.qkv_proj.{k}"].data
               for k in ("qweight", "qzeros", "scales")}
        dequantize = (quant_pack.awq_dequantize if spec.scheme == "awq"
                      else quant_pack.gptq_dequantize)
        weight = dequantize(qkv).half()
        expect = torch.cat([ref[f"{attn}.{p}_proj.weight"] for p in "qkv"])
    else:
        o_proj = {k: params[f"{attn}.o_proj.{k}"].data
                  for k in ("weight_packed", "weight_scale")}
        weight = quant_pack.ct_dequantize(o_proj).half()
        expect = ref[f"{attn}.o_proj.weight"]
    experts, experts_module, expert_equal = {}, None, None
    for module_name, module in model.named_modules():
        # Qwen2-MoE's mlp.experts, Mixtral's block_sparse_moe.experts.
        if module_name.endswith(".experts"):
            experts = {k: list(v.shape) for k, v in module.named_parameters()}
            experts_module = module_name
            break
    if spec.scheme == "gptq" and experts_module is not None:
        expert_equal = _gptq_expert_equal(model, experts_module, ref,
                                          spec.family)
    return {"name": name, "arch": cls.__name__,
            "loaded": len(loaded), "unloaded": sorted(set(params) - loaded),
            "methods": methods, "experts": experts,
            "experts_module": experts_module,
            "dequantized_equal": bool(torch.equal(weight, expect)),
            "expert_dequantized_equal": expert_equal,
            "dtype": str(model_config.dtype)}


def _gptq_expert_equal(model, experts: str, ref: dict, family: str) -> bool:
    """Expert 1 of the loaded moe_wna16 layer, dequantized, against the
    reference: moe_wna16 keeps GPTQ experts as uint8 ``[E, out, in / 2]``
    (low nibble the even input), fp16 scales ``[E, out, in / G]``; without
    zero points (sym) the zero is 8."""
    import torch
    params = dict(model.named_parameters())
    names = ({"w13": ("gate_proj", "up_proj"), "w2": ("down_proj", )}
             if family == "qwen2_moe" else
             {"w13": ("w1", "w3"), "w2": ("w2", )})
    ok = True
    for fused, parts in names.items():
        packed = params[f"{experts}.{fused}_qweight"].data[1].to(torch.int64)
        scales = params[f"{experts}.{fused}_scales"].data[1].float()
        q = torch.stack([packed & 0xF, packed >> 4], -1).reshape(
            packed.shape[0], -1)
        group = q.shape[1] // scales.shape[1]
        weight = ((q - 8).float() *
                  scales.repeat_interleave(group, dim=1)).half()
        expect = torch.cat([ref[f"{experts}.1.{p}.weight"] for p in parts])
        ok = ok and bool(torch.equal(weight, expect))
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--tree", type=Path,
                        default=Path(os.environ.get("VLLM_VOLTA_TREE")
                                     or ROOT / "upstream"))
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    tree = args.tree if args.tree.is_absolute() else ROOT / args.tree
    _setup(tree.resolve())
    for name in args.names:
        print("RESULT " + json.dumps(check(name, args.models)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
