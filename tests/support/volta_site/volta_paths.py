"""Path evidence: every Triton launch and compiled op a process reached.

Recorded, with counts, into VLLM_VOLTA_PATH_LOG/<pid>.json (rewritten when
a new entry appears and at exit):

- ``ops``: calls through ``torch.ops._C``, ``_C_cache_ops``, ``_moe_C`` and
  ``vllm`` (vLLM's own custom ops, e.g. the fused-MoE wrappers), by
  ``namespace.name``. Calls replayed from a CUDA graph run no Python and
  are counted once, at capture;
- ``triton``: ``JITFunction.run`` launches by kernel name, with the
  ``dot_fp32`` / ``DOT_FP32``, ``num_warps`` and ``num_stages`` arguments
  where given;
  inductor-generated kernels (``inductor:<name>``);
- ``attention_backends``: what ``vllm.attention.selector.get_attn_backend``
  returned;
- ``flash_modules``: modules whose name holds ``flash_attn`` or
  ``flashinfer`` imported in the process (none on the Volta path).
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections import Counter
from pathlib import Path

_LOCK = threading.Lock()
_SEEN: dict[str, Counter] = {"ops": Counter(), "triton": Counter(),
                             "attention_backends": Counter()}
_FILE = None
NAMESPACES = ("_C", "_C_cache_ops", "_moe_C", "vllm")


def _note(kind: str, key: str) -> None:
    with _LOCK:
        new = key not in _SEEN[kind]
        _SEEN[kind][key] += 1
    if new:
        dump()


def snapshot() -> dict:
    with _LOCK:
        data = {kind: dict(counter) for kind, counter in _SEEN.items()}
    data["flash_modules"] = sorted(
        name for name in list(sys.modules)
        if "flash_attn" in name or "flashinfer" in name)
    data["pid"] = os.getpid()
    data["argv"] = sys.argv[:3]
    return data


def dump() -> None:
    if _FILE is None:
        return
    tmp = _FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot(), indent=1, sort_keys=True))
    tmp.replace(_FILE)


class _Namespace:
    """Stands in for ``torch.ops.<ns>``: records each op fetched and called."""

    def __init__(self, name, real):
        self._name, self._real = name, real

    def __getattr__(self, op):
        target = getattr(self._real, op)
        if not callable(target):
            return target
        key = f"{self._name}.{op}"

        def call(*args, **kwargs):
            _note("ops", key)
            return target(*args, **kwargs)

        call.__name__ = op
        call.default = getattr(target, "default", None)
        return call


def _wrap_triton() -> None:
    try:
        from triton.runtime.jit import JITFunction
    except ImportError:
        return
    real = JITFunction.run

    def run(self, *args, **kwargs):
        extra = [f"{k}={kwargs[k]}" for k in ("dot_fp32", "DOT_FP32",
                                               "num_warps", "num_stages")
                 if k in kwargs]
        name = getattr(getattr(self, "fn", None), "__name__", "?")
        _note("triton", name + (f" ({', '.join(extra)})" if extra else ""))
        return real(self, *args, **kwargs)

    JITFunction.run = run


def install(after_import) -> None:
    global _FILE
    import torch

    directory = Path(os.environ["VLLM_VOLTA_PATH_LOG"])
    directory.mkdir(parents=True, exist_ok=True)
    _FILE = directory / f"{os.getpid()}.json"
    for ns in NAMESPACES:
        setattr(torch.ops, ns, _Namespace(ns, getattr(torch.ops, ns)))
    _wrap_triton()

    @after_import("torch._inductor.runtime.triton_heuristics")
    def _inductor(heuristics):
        real = heuristics.CachingAutotuner.run

        def run(self, *args, **kwargs):
            _note("triton", "inductor:" + getattr(self.fn, "__name__", "?"))
            return real(self, *args, **kwargs)

        heuristics.CachingAutotuner.run = run

    @after_import("vllm.attention.selector")
    def _selector(selector):
        real = selector.get_attn_backend

        def get_attn_backend(*args, **kwargs):
            backend = real(*args, **kwargs)
            _note("attention_backends",
                  f"{backend.__module__}.{backend.__qualname__}")
            return backend

        selector.get_attn_backend = get_attn_backend

    atexit.register(dump)
    dump()
