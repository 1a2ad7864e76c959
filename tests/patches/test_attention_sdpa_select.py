"""Attention backend selection on Volta/Turing (V0): TORCH_SDPA.

Patch: "platforms/cuda: default to TORCH_SDPA attention on SM 7.x (V0)"
(Tier: critical).

Upstream 0.9.2 picks XFormers by default on capability < 8.0 and raises
"Invalid attention backend for cuda" for VLLM_ATTENTION_BACKEND=TORCH_SDPA.
With the series, TORCH_SDPA selects the CUDA torch SDPA backend on any
CUDA GPU, it is the default on capability 7.x (logged once), XFORMERS
stays selectable, and a backend that cannot run on SM 7.x is refused with
an error naming TORCH_SDPA. Capability 8.0 and 9.0 keep their selection.

Runs on CPU: the tree's vllm with ``vllm._C`` stubbed and CUDA platform
classes whose capability is mocked.
"""
import logging
import sys
import types

import pytest
import torch

import vllm.attention.layer
import vllm.attention.selector
import vllm.logger
from vllm.platforms.cuda import CudaPlatformBase
from vllm.platforms.interface import DeviceCapability, _Backend
from vllm.utils import resolve_obj_by_qualname

SDPA = "vllm.attention.backends.torch_sdpa_cuda.TorchSDPACudaBackend"
XFORMERS = "vllm.attention.backends.xformers.XFormersBackend"
FLASH = "vllm.attention.backends.flash_attn.FlashAttentionBackend"

VOLTA, TURING, AMPERE, HOPPER = (7, 0), (7, 5), (8, 0), (9, 0)


def fake_cuda(capability):
    """A CUDA platform reporting the given capability, touching no GPU."""

    class FakeCudaPlatform(CudaPlatformBase):

        @classmethod
        def get_device_capability(cls, device_id: int = 0):
            return DeviceCapability(*capability)

        @classmethod
        def get_device_name(cls, device_id: int = 0) -> str:
            return f"fake sm_{capability[0]}{capability[1]}"

    return FakeCudaPlatform()


def select(platform, backend=None, dtype=torch.float16, head_size=128,
           block_size=16):
    """The V0 selection: get_attn_backend_cls(selected, head_size, dtype,
    kv_cache_dtype, block_size, use_v1, use_mla)."""
    return platform.get_attn_backend_cls(backend, head_size, dtype, None,
                                         block_size, False, False)


@pytest.fixture
def flash_attn_installed(monkeypatch):
    """Make the FlashAttention-2 package importable (not on CPU machines)
    so that the SM 8.0+ default can be seen."""
    fa = types.ModuleType("vllm.vllm_flash_attn")
    backend = types.ModuleType("vllm.attention.backends.flash_attn")

    class FlashAttentionBackend:

        @staticmethod
        def get_supported_head_sizes():
            return [32, 64, 96, 128, 160, 192, 224, 256]

    backend.FlashAttentionBackend = FlashAttentionBackend
    backend.flash_attn_supports_fp8 = lambda: False
    monkeypatch.setitem(sys.modules, fa.__name__, fa)
    monkeypatch.setitem(sys.modules, backend.__name__, backend)


@pytest.mark.parametrize("capability", [VOLTA, TURING])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_default_on_sm7x_is_torch_sdpa(capability, dtype):
    cls = select(fake_cuda(capability), dtype=dtype)
    assert cls == SDPA
    backend = resolve_obj_by_qualname(cls)
    assert backend.get_name() == "TORCH_SDPA"


def test_default_is_logged_once(cuda_log):
    platform = fake_cuda(VOLTA)
    for _ in range(4):
        assert select(platform) == SDPA
    notes = [r.getMessage() for r in cuda_log if "SDPA" in r.getMessage()]
    assert len(notes) == 1, notes
    assert "7.0" in notes[0]


@pytest.mark.parametrize("capability", [VOLTA, TURING, AMPERE, HOPPER])
def test_explicit_torch_sdpa_selects_cuda_backend(capability):
    assert select(fake_cuda(capability), _Backend.TORCH_SDPA) == SDPA


def test_xformers_stays_selectable_on_volta():
    platform = fake_cuda(VOLTA)
    assert select(platform, _Backend.XFORMERS) == XFORMERS
    assert select(platform) == SDPA


@pytest.mark.parametrize("backend", [
    _Backend.FLASH_ATTN,
    _Backend.DUAL_CHUNK_FLASH_ATTN,
    _Backend.FLASH_ATTN_VLLM_V1,
    _Backend.TRITON_ATTN_VLLM_V1,
    _Backend.FLEX_ATTENTION,
    _Backend.TRITON_MLA,
    _Backend.FLASHMLA,
])
@pytest.mark.parametrize("capability", [VOLTA, TURING])
def test_backends_that_cannot_run_on_sm7x_are_refused(capability, backend):
    with pytest.raises(ValueError) as err:
        select(fake_cuda(capability), backend)
    message = str(err.value)
    assert backend.name in message
    assert "TORCH_SDPA" in message
    assert f"{capability[0]}.{capability[1]}" in message


def test_flashinfer_refused_on_volta_kept_on_turing():
    """FlashInfer has no SM 7.0 build; it supports SM 7.5."""
    with pytest.raises(ValueError, match="TORCH_SDPA"):
        select(fake_cuda(VOLTA), _Backend.FLASHINFER)
    assert select(fake_cuda(TURING), _Backend.FLASHINFER) == (
        "vllm.attention.backends.flashinfer.FlashInferBackend")
    assert select(fake_cuda(TURING)) == SDPA


@pytest.mark.parametrize("capability", [AMPERE, HOPPER])
def test_sm80_plus_selection_is_kept(capability, flash_attn_installed):
    """FlashAttention stays the default and FLASH_ATTN/XFORMERS keep
    working at 8.0+; TORCH_SDPA becomes selectable there too."""
    platform = fake_cuda(capability)
    assert select(platform) == FLASH
    assert select(platform, _Backend.FLASH_ATTN) == FLASH
    assert select(platform, _Backend.XFORMERS) == XFORMERS
    # Upstream's fallbacks when FlashAttention-2 does not fit.
    assert select(platform, dtype=torch.float32) == XFORMERS
    assert select(platform, block_size=8) == XFORMERS
    assert select(platform, head_size=80) == XFORMERS
    with pytest.raises(ValueError, match="Invalid attention backend"):
        select(platform, _Backend.TRITON_ATTN_VLLM_V1)
    assert select(platform, _Backend.TORCH_SDPA) == SDPA


def test_selector_and_vit_encoders_on_volta(monkeypatch):
    """Through vLLM's selector (as the model runner and the vision
    encoders' MultiHeadAttention call it): the default on a V100 is the
    CUDA TORCH_SDPA backend, and vision encoders run torch SDPA."""
    platform = fake_cuda(VOLTA)
    monkeypatch.delenv("VLLM_ATTENTION_BACKEND", raising=False)
    # Capability < 8.0 runs the V0 engine (arg_utils falls back to it).
    monkeypatch.setenv("VLLM_USE_V1", "0")
    monkeypatch.setattr(vllm.attention.selector, "current_platform",
                        platform)
    monkeypatch.setattr(vllm.attention.layer, "current_platform", platform)
    vllm.attention.selector._cached_get_attn_backend.cache_clear()
    try:
        backend = vllm.attention.selector.get_attn_backend(
            128, torch.float16, None, 16, False)
        assert backend.__module__ == "vllm.attention.backends.torch_sdpa_cuda"
        mha = vllm.attention.layer.MultiHeadAttention(num_heads=4,
                                                      head_size=64,
                                                      scale=0.125)
        assert mha.attn_backend == _Backend.TORCH_SDPA
    finally:
        vllm.attention.selector._cached_get_attn_backend.cache_clear()
