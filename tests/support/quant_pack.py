"""Pack float weights into the three 4-bit checkpoint formats vLLM reads.

Made locally, no quantization library: random (or any) weights are
quantized group-wise and packed exactly as the real checkpoints store them,
so tiny models (tiny_models.py) and kernel tests can be written in any of
them, together with the dequantized weights a reference runs on.

AWQ (AutoAWQ's GEMM layout, ``quant_method: awq``), for a linear layer of
``in`` inputs and ``out`` outputs, groups of ``G`` inputs:

- ``qweight`` int32 ``[in, out / 8]``: eight 4-bit values of consecutive
  output columns per int32, nibble ``i`` (bits ``4i..4i+3``) holding column
  ``AWQ_ORDER[i]`` of the eight, AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7];
- ``qzeros`` int32 ``[in / G, out / 8]``: the zero points, packed the same;
- ``scales`` fp16 ``[in / G, out]``;
- weight ``W[o, i] = (q[i, o] - z[i // G, o]) * s[i // G, o]``.

compressed-tensors ``pack-quantized`` (llm-compressor's W4A16), symmetric,
group strategy:

- ``weight_packed`` int32 ``[out, in / 8]``: the signed values ``q`` in
  [-8, 7] stored as ``q + 8``, eight consecutive inputs per int32, input
  ``8j + i`` in nibble ``i``;
- ``weight_scale`` fp16 ``[out, in / G]``; ``weight_shape`` int64
  ``[out, in]``;
- weight ``W[o, i] = q[o, i] * s[o, i // G]``.

GPTQ (AutoGPTQ's and GPTQModel's ``quant_method: gptq``, checkpoint format
v1 ``gptq``), symmetric, ``desc_act`` false:

- ``qweight`` int32 ``[in / 8, out]``: eight 4-bit values of consecutive
  input rows per int32, input ``8j + i`` in nibble ``i`` (vLLM's
  gptq_pack);
- ``qzeros`` int32 ``[in / G, out / 8]``: the zero points packed along the
  outputs, output ``8j + i`` in nibble ``i``; v1 stores ``zero - 1`` (the
  GPTQ kernels and moe_wna16 add the 1 back), so the symmetric zero 8 is
  stored as 7;
- ``scales`` fp16 ``[in / G, out]``; ``g_idx`` int32 ``[in]``, the group
  of each input, ``i // G`` without act-order;
- weight ``W[o, i] = (q[i, o] - (z[g, o] + 1)) * s[g, o]``,
  ``g = g_idx[i]``; symmetric: ``(q[i, o] - 8) * s[i // G, o]``.

The ``*_config`` functions give the matching ``quantization_config`` of
config.json. Dequantization happens in float32; the fp16 weights of a
reference are ``dequantized.half()``, which is exactly what vLLM's fp16
dequantization produces (the product of a small integer and an fp16 scale
is rounded once either way).
"""
from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
PACK = 8  # 4-bit values per int32


def _as_int32(packed: torch.Tensor) -> torch.Tensor:
    # Bit patterns built in int64 (0 .. 2**32 - 1) to int32 two's complement.
    packed = packed & 0xFFFFFFFF
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def _pack_last(values: torch.Tensor, order=tuple(range(PACK))) -> torch.Tensor:
    """Pack 4-bit values (0..15) eight to an int32 along the last dim;
    nibble i takes element order[i] of each group of eight."""
    *lead, n = values.shape
    assert n % PACK == 0, f"{n} values do not pack eight to an int32"
    v = values.to(torch.int64).reshape(*lead, n // PACK, PACK)
    packed = torch.zeros(*lead, n // PACK, dtype=torch.int64)
    for nibble, column in enumerate(order):
        packed |= (v[..., column] & 0xF) << (4 * nibble)
    return _as_int32(packed)


def _unpack_last(packed: torch.Tensor, order=tuple(range(PACK))) -> torch.Tensor:
    """Inverse of _pack_last: int32 [..., n / 8] to values 0..15 [..., n]."""
    p = packed.to(torch.int64) & 0xFFFFFFFF
    *lead, n = p.shape
    out = torch.empty(*lead, n, PACK, dtype=torch.int64)
    for nibble, column in enumerate(order):
        out[..., column] = (p >> (4 * nibble)) & 0xF
    return out.reshape(*lead, n * PACK)


def _symmetric(weight: torch.Tensor, group_size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 4-bit of a ``[out, in]`` weight: the signed values q
    ``[out, in]`` in [-7, 7] and the scales ``[out, in / G]`` (float32
    holding fp16 values), ``W ~ q * s``."""
    out, inp = weight.shape
    w = _groups(weight, group_size)
    scale = (w.abs().amax(dim=-1) / 7).clamp(min=1e-5).half().float()
    q = torch.round(w / scale[..., None]).clamp(-8, 7)
    return q.reshape(out, inp).to(torch.int64), scale


def _groups(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    out, inp = weight.shape
    assert inp % group_size == 0, (
        f"group size {group_size} does not divide {inp} inputs")
    return weight.float().reshape(out, inp // group_size, group_size)


# --- AWQ ----------------------------------------------------------------------


def awq_quantize(weight: torch.Tensor, group_size: int = 128) -> dict:
    """Asymmetric 4-bit, per group of inputs, of a ``[out, in]`` weight
    (nn.Linear layout); AWQ tensors ``qweight``, ``qzeros``, ``scales``."""
    out, inp = weight.shape
    w = _groups(weight, group_size)
    low = w.amin(dim=-1).clamp(max=0)
    high = w.amax(dim=-1).clamp(min=0)
    scale = ((high - low) / 15).clamp(min=1e-5).half().float()
    zero = torch.round(-low / scale).clamp(0, 15)
    q = torch.round(w / scale[..., None] + zero[..., None]).clamp(0, 15)
    q = q.reshape(out, inp).to(torch.int64)
    return {
        "qweight": _pack_last(q.T.contiguous(), AWQ_ORDER),
        "qzeros": _pack_last(zero.T.to(torch.int64).contiguous(), AWQ_ORDER),
        "scales": scale.T.contiguous().half(),
    }


def awq_unpack(tensors: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(q ``[in, out]``, zeros ``[in / G, out]``), values 0..15."""
    return (_unpack_last(tensors["qweight"], AWQ_ORDER),
            _unpack_last(tensors["qzeros"], AWQ_ORDER))


def awq_dequantize(tensors: dict) -> torch.Tensor:
    """The float32 ``[out, in]`` weight the AWQ tensors stand for."""
    q, zeros = awq_unpack(tensors)
    scales = tensors["scales"].float()
    group_size = q.shape[0] // scales.shape[0]
    zeros = zeros.repeat_interleave(group_size, dim=0)
    scales = scales.repeat_interleave(group_size, dim=0)
    return ((q - zeros).float() * scales).T.contiguous()


def awq_config(group_size: int = 128,
               modules_to_not_convert: list[str] | None = None) -> dict:
    return {"quant_method": "awq", "bits": 4, "group_size": group_size,
            "zero_point": True, "version": "gemm",
            "modules_to_not_convert": modules_to_not_convert}


# --- compressed-tensors pack-quantized ----------------------------------------


def ct_quantize(weight: torch.Tensor, group_size: int = 128) -> dict:
    """Symmetric 4-bit, per group of inputs, of a ``[out, in]`` weight;
    compressed-tensors tensors ``weight_packed``, ``weight_scale``,
    ``weight_shape``."""
    out, inp = weight.shape
    q, scale = _symmetric(weight, group_size)
    return {
        "weight_packed": _pack_last(q + 8),
        "weight_scale": scale.half(),
        "weight_shape": torch.tensor([out, inp], dtype=torch.int64),
    }


def ct_unpack(tensors: dict) -> torch.Tensor:
    """The signed values q ``[out, in]``, -8..7."""
    return _unpack_last(tensors["weight_packed"]) - 8


def ct_dequantize(tensors: dict) -> torch.Tensor:
    """The float32 ``[out, in]`` weight the compressed-tensors tensors stand
    for."""
    q = ct_unpack(tensors)
    scales = tensors["weight_scale"].float()
    group_size = q.shape[1] // scales.shape[1]
    return q.float() * scales.repeat_interleave(group_size, dim=1)


def ct_config(group_size: int = 128, ignore: list[str] | None = None) -> dict:
    weights = {"num_bits": 4, "type": "int", "symmetric": True,
               "strategy": "group", "group_size": group_size,
               "dynamic": False, "actorder": None, "observer": "minmax",
               "observer_kwargs": {}, "block_structure": None}
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "global_compression_ratio": None,
        "config_groups": {
            "group_0": {"targets": ["Linear"], "weights": weights,
                        "input_activations": None,
                        "output_activations": None},
        },
        "ignore": list(ignore or ["lm_head"]),
        "kv_cache_scheme": None,
        "sparsity_config": {},
    }


# --- GPTQ ---------------------------------------------------------------------

GPTQ_ZERO = 8  # the symmetric 4-bit zero point


def gptq_quantize(weight: torch.Tensor, group_size: int = 128) -> dict:
    """Symmetric 4-bit, per group of inputs, of a ``[out, in]`` weight;
    GPTQ v1 tensors ``qweight``, ``qzeros``, ``scales``, ``g_idx``."""
    out, inp = weight.shape
    q, scale = _symmetric(weight, group_size)
    groups = inp // group_size
    # Stored zero - 1 (v1 checkpoint format).
    zeros = torch.full((groups, out), GPTQ_ZERO - 1, dtype=torch.int64)
    return {
        # Packed along the inputs: pack the rows of q^T, eight at a time.
        "qweight": _pack_last(q + GPTQ_ZERO).T.contiguous(),
        "qzeros": _pack_last(zeros),
        "scales": scale.T.contiguous().half(),
        "g_idx": (torch.arange(inp) // group_size).to(torch.int32),
    }


def gptq_unpack(tensors: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(q ``[in, out]``, stored zeros ``[in / G, out]``), values 0..15; the
    zero point a weight is taken from is the stored value + 1."""
    q = _unpack_last(tensors["qweight"].T).T.contiguous()
    return q, _unpack_last(tensors["qzeros"])


def gptq_dequantize(tensors: dict) -> torch.Tensor:
    """The float32 ``[out, in]`` weight the GPTQ tensors stand for; the
    groups from ``g_idx`` where given, else ``i // G``."""
    q, zeros = gptq_unpack(tensors)
    scales = tensors["scales"].float()
    g_idx = tensors.get("g_idx")
    if g_idx is None:
        g_idx = torch.arange(q.shape[0]) // (q.shape[0] // scales.shape[0])
    g_idx = g_idx.to(torch.int64)
    return ((q - (zeros[g_idx] + 1)).float() * scales[g_idx]).T.contiguous()


def gptq_config(group_size: int = 128) -> dict:
    return {"quant_method": "gptq", "bits": 4, "group_size": group_size,
            "desc_act": False, "sym": True, "static_groups": False,
            "true_sequential": True, "damp_percent": 0.01,
            "checkpoint_format": "gptq"}


SCHEMES = {
    "awq": (awq_quantize, awq_dequantize, awq_config),
    "w4a16": (ct_quantize, ct_dequantize, ct_config),
    "gptq": (gptq_quantize, gptq_dequantize, gptq_config),
}


def quantize(scheme: str, weight: torch.Tensor,
             group_size: int = 128) -> tuple[dict, torch.Tensor]:
    """The checkpoint tensors of ``weight`` in ``scheme`` ("awq", "w4a16"
    or "gptq"), keyed by suffix (they replace ``<module>.weight``), and the
    float32 weight they dequantize to."""
    pack, unpack, _ = SCHEMES[scheme]
    tensors = pack(weight, group_size)
    return tensors, unpack(tensors)
