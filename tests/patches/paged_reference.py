"""Shared by the TORCH_SDPA backend's CPU tests: the module under test, a stand-in layer, and the
torch reference of vLLM's paged-attention ops.

``ref`` is tests/kernels/sdpa_reference.py (loaded by path: tests/kernels sets
Triton up in its own process). ``use_reference_kernels`` puts torch stand-ins
in place of the CUDA-only cache write and decode kernel and returns the list
of decode calls (each call's seq_lens). ``use_reference_varlen`` puts the torch
stand-in of the memory-efficient varlen kernel (CUDA-only) in place, where the
tree has the one-launch prefill, and returns the list of its launches.
"""
import importlib
import importlib.util
import sys
from pathlib import Path

import torch

_REF = Path(__file__).resolve().parents[1] / "kernels" / "sdpa_reference.py"


def _load_reference():
    name = "vllm_volta_sdpa_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _REF)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ref = _load_reference()


def backend():
    """The module under test (fails, not skips, on a tree without it)."""
    return importlib.import_module("vllm.attention.backends.torch_sdpa_cuda")


class Layer:
    """The attributes of an Attention layer that the impl reads."""

    def __init__(self):
        self._k_scale = torch.tensor(1.0)
        self._v_scale = torch.tensor(1.0)


def use_reference_varlen(monkeypatch) -> list:
    """Record each launch as (query tokens, key tokens, heads, mask, window)."""
    launches = []
    if importlib.util.find_spec("vllm.attention.ops.mem_efficient_varlen") is None:
        return launches  # a tree from before the one-launch prefill
    from vllm.attention.ops import mem_efficient_varlen as varlen

    def efficient_attention(query, key, value, cu_q, cu_k, max_q, max_k, mask, scale,
                            window, return_lse):
        launches.append((query.shape[1], key.shape[1], query.shape[2], mask, window))
        return ref.efficient_attention_torch(query, key, value, cu_q, cu_k, max_q, max_k,
                                             mask, scale, window, return_lse)

    monkeypatch.setattr(varlen, "efficient_attention", efficient_attention)
    monkeypatch.setattr(varlen, "kernel_supports_window", lambda: True)
    return launches


def use_reference_kernels(monkeypatch) -> list:
    """The stand-in decode computes what paged_attention_v1/v2 compute: all seq_lens keys, no
    window, no soft cap."""
    from vllm.attention.ops import paged_attn
    calls = []

    def write_to_paged_cache(key, value, key_cache, value_cache,
                             slot_mapping, kv_cache_dtype, k_scale, v_scale):
        ref.write_kv_torch(key, value, key_cache, value_cache,
                           slot_mapping.flatten())

    def forward_decode(query, key_cache, value_cache, block_tables, seq_lens,
                       max_seq_len, kv_cache_dtype, num_kv_heads, scale,
                       alibi_slopes, k_scale, v_scale, *args, **kwargs):
        calls.append(seq_lens.tolist())
        return ref.paged_decode_torch(query, key_cache, value_cache,
                                      block_tables, seq_lens, scale,
                                      num_kv_heads, alibi_slopes)

    monkeypatch.setattr(paged_attn.PagedAttention, "write_to_paged_cache",
                        staticmethod(write_to_paged_cache))
    monkeypatch.setattr(paged_attn.PagedAttention, "forward_decode",
                        staticmethod(forward_decode))
    use_reference_varlen(monkeypatch)
    return calls
