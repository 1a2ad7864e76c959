"""The Volta path forced onto a vLLM source tree (see sitecustomize.py).

Changes are made right after the module concerned is first imported
(post-import hooks), so vLLM's own code runs otherwise unchanged.
"""
from __future__ import annotations

import importlib.abc
import os
import sys
import types

_HOOKS: dict[str, list] = {}


def after_import(name: str):
    """Decorator: run ``fn(module)`` once ``name`` has been imported."""
    def register(fn):
        module = sys.modules.get(name)
        if module is not None:
            fn(module)
        else:
            _HOOKS.setdefault(name, []).append(fn)
        return fn
    return register


class _Loader(importlib.abc.Loader):

    def __init__(self, inner, name):
        self._inner, self._name = inner, name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        for fn in _HOOKS.pop(self._name, []):
            fn(module)


class _Finder(importlib.abc.MetaPathFinder):

    def find_spec(self, name, path, target=None):
        if name not in _HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, name)
                return spec
        return None


sys.meta_path.insert(0, _Finder())

_CC = os.environ.get("VLLM_VOLTA_FORCE_CC", "")
if _CC:
    _MAJOR, _MINOR = (int(x) for x in _CC.split("."))

    @after_import("vllm.platforms.cuda")
    def _force_capability(cuda):
        from vllm.platforms.interface import DeviceCapability

        forced = classmethod(
            lambda cls, device_id=0: DeviceCapability(_MAJOR, _MINOR))
        for name in ("CudaPlatformBase", "NvmlCudaPlatform",
                     "NonNvmlCudaPlatform"):
            if hasattr(cuda, name):
                setattr(getattr(cuda, name), "get_device_capability", forced)

    import torch

    # SM 7.0 has no FlashAttention (nor cuDNN) SDPA kernel in torch: leave
    # torch the memory-efficient and math kernels a V100 has.
    torch.backends.cuda.enable_flash_sdp(False)
    if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)

_EXT = os.environ.get("VLLM_VOLTA_OPS_EXT", "")
if _EXT:
    import torch

    torch.ops.load_library(_EXT)
    import volta_reference_ops

    volta_reference_ops.register()
    for _stand_in in ("vllm._C", "vllm._moe_C"):
        module = types.ModuleType(_stand_in)
        module.__doc__ = f"stand-in: ops registered by {_EXT}"
        sys.modules.setdefault(_stand_in, module)

if os.environ.get("VLLM_VOLTA_SHARED_GPU"):
    # Several engines share the GPU: vLLM's sanity check that used memory
    # grew during its own profiling run can trip on another process freeing
    # memory. The KV cache size is fixed (num_gpu_blocks_override) instead.
    @after_import("vllm.worker.worker")
    def _shared_gpu(worker):
        worker.Worker._assert_memory_footprint_increased_during_profiling = (
            lambda self: None)

if os.environ.get("VLLM_VOLTA_PATH_LOG"):
    import volta_paths

    volta_paths.install(after_import)
