"""Probe torch and vllm in a child process and print one JSON object.

Run as a script (``python probe.py``) by the doctor, so that a crash or hang
while importing torch or vllm is contained and timed out. Stdlib + torch/vllm.
"""

import json
import os
import sys


def _torch_facts():
    import torch

    facts = {"version": torch.__version__, "cuda": torch.version.cuda}
    flags = getattr(torch._C, "_cuda_getArchFlags", None)
    facts["arch_flags"] = flags() if flags else None
    facts["arch_list"] = torch.cuda.get_arch_list()
    facts["cuda_available"] = torch.cuda.is_available()
    gpus = []
    if facts["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({
                "index": index,
                "name": props.name,
                "capability": [props.major, props.minor],
                "memory_mib": props.total_memory // (1 << 20),
            })
    facts["gpus"] = gpus
    return facts


def _vllm_facts():
    # The engine falls back to V0 on capability < 8 by itself; the selector
    # reads VLLM_USE_V1 directly, so mirror that fallback unless the user set it.
    os.environ.setdefault("VLLM_USE_V1", "0")
    import torch
    import vllm
    from vllm.attention.selector import get_attn_backend
    from vllm.platforms import current_platform

    facts = {"version": vllm.__version__, "platform": type(current_platform).__name__}
    backends = {}
    for head_size in (64, 128):
        try:
            backend = get_attn_backend(head_size, torch.float16, None, 16, False)
            backends[str(head_size)] = backend.get_name()
        except Exception as exc:  # reported, not raised: the doctor judges it
            backends[str(head_size)] = f"error: {type(exc).__name__}: {exc}"
    facts["attention_backend"] = backends
    return facts


def _guard(function):
    try:
        return function()
    except BaseException as exc:  # an import error is a fact too
        return {"error": f"{type(exc).__name__}: {exc}"}


def main():
    result = {"torch": _guard(_torch_facts)}
    result["vllm"] = _guard(_vllm_facts) if "--no-vllm" not in sys.argv else None
    for name in ("triton", "xformers"):
        try:
            module = __import__(name)
            result[name] = getattr(module, "__version__", "unknown")
        except BaseException as exc:
            result[name] = f"error: {type(exc).__name__}: {exc}"
    sys.stdout.write("\n@@PROBE@@" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
