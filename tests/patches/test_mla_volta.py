"""Patch "config: run MLA models with standard attention on sm_7x".

On compute capability 7.x every MLA backend fails (Triton MLA's decode
kernel cannot be compiled by Triton 3.3, its prefill needs
FlashAttention-2), so ModelConfig.use_mla must be False there, as with
VLLM_MLA_DISABLE=1; on 8.0 a DeepSeek MLA model keeps MLA.

CPU only: the property is evaluated on a stand-in config object.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

import pytest


def _import_tree():
    # tests/patches/conftest.py puts the tree first on sys.path; this
    # also works when the module is run on its own with VLLM_VOLTA_TREE.
    tree = os.environ.get("VLLM_VOLTA_TREE")
    if tree and "vllm" not in sys.modules and tree not in sys.path:
        sys.path.insert(0, tree)
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    return importlib.import_module("vllm.config")


config = _import_tree()


@pytest.fixture
def capability(monkeypatch):
    from vllm.platforms import current_platform
    from vllm.platforms.interface import DeviceCapability, PlatformEnum
    platform_cls = type(current_platform)
    monkeypatch.delenv("VLLM_MLA_DISABLE", raising=False)

    def set_capability(major, minor):
        cap = DeviceCapability(major, minor)
        monkeypatch.setattr(platform_cls, "_enum", PlatformEnum.CUDA)
        monkeypatch.setattr(platform_cls, "get_device_capability",
                            classmethod(lambda cls, device_id=0: cap))

    return set_capability


def use_mla(is_deepseek_mla: bool) -> bool:
    fake = types.SimpleNamespace(is_deepseek_mla=is_deepseek_mla,
                                 model="deepseek-ai/DeepSeek-V2-Lite")
    return config.ModelConfig.use_mla.fget(fake)


def test_mla_off_on_volta(capability):
    capability(7, 0)
    assert use_mla(True) is False


def test_mla_kept_on_ampere(capability):
    capability(8, 0)
    assert use_mla(True) is True


def test_non_mla_model_unchanged(capability):
    capability(7, 0)
    assert use_mla(False) is False
