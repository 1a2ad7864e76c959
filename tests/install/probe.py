"""Import the installed vllm as a CUDA host of capability 7.0 would, and say what failed.

Run by tests/install with the Python of a fresh venv that holds the built
wheel and its dependencies, never with the tree on sys.path:

    python probe.py OUT.json        # the import probe
    python probe.py cli ARGS...     # the `vllm` console script, e.g. `cli serve --help`

The compiled extensions are loaded for real (the CUDA driver stub on
LD_LIBRARY_PATH stands in for the driver); the platform is a CUDA platform
reporting a Tesla V100, so every import takes its CUDA branch. Writes one
JSON object; exits 0 whatever failed (the test judges).
"""
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

# The engine, its workers and runners, the attention backend the platform
# picks on 7.0, the MoE layer, the OpenAI server and the CLI.
CORE = [
    "vllm.engine.llm_engine",
    "vllm.engine.async_llm_engine",
    "vllm.entrypoints.llm",
    "vllm.worker.worker",
    "vllm.worker.model_runner",
    "vllm.worker.enc_dec_model_runner",
    "vllm.worker.pooling_model_runner",
    "vllm.executor.mp_distributed_executor",
    "vllm.attention.backends.torch_sdpa_cuda",
    "vllm.attention.ops.paged_attn",
    "vllm.model_executor.layers.fused_moe.fused_moe",
    "vllm.model_executor.layers.rotary_embedding",
    "vllm.model_executor.model_loader",
    "vllm.entrypoints.openai.api_server",
    "vllm.entrypoints.cli.main",
]


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]


def try_import(name: str, attr: str | None = None) -> str:
    try:
        module = importlib.import_module(name)
        if attr is not None:
            getattr(module, attr)
        return "ok"
    except BaseException as exc:  # noqa: BLE001 - the probe reports, the test judges
        return error_text(exc)


def pretend_cuda_host():
    """Make this process look like a V100 host to vLLM, before vLLM's modules load."""
    # A CUDA host's Triton has an active driver; here none is, and vLLM would
    # then import its Triton-less fallbacks (vllm/triton_utils/importing.py).
    # Report the NVIDIA backend active so the imports take the host's branch;
    # nothing is compiled or launched.
    from triton.backends import backends
    backends["nvidia"].driver.is_active = staticmethod(lambda: True)
    import vllm.platforms
    sys.path.insert(0, str(TESTS))
    from patches.fakes import fake_cuda
    vllm.platforms._current_platform = fake_cuda(7, 0, "Tesla V100-SXM2-32GB")
    return vllm.platforms.current_platform


def run_console_script(args: list[str]) -> int:
    """The installed `vllm` console script, as its entry point names it, under the V100 stand-in."""
    from importlib.metadata import entry_points
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "vllm"]
    pretend_cuda_host()
    sys.argv = ["vllm", *args]
    try:
        return script.load()() or 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def main(out: Path) -> None:
    result: dict = {"python": sys.version.split()[0]}
    start = time.monotonic()
    import torch
    platform = pretend_cuda_host()
    import vllm
    result["torch"] = torch.__version__
    result["vllm"] = getattr(vllm, "__version__", None)
    result["vllm_file"] = vllm.__file__
    from vllm.triton_utils import HAS_TRITON
    result["has_triton"] = HAS_TRITON
    # The compiled extensions, loaded for real (the driver stub stands in for a GPU's driver).
    exts = {}
    for name, op in (("vllm._C", ("_C", "silu_and_mul")), ("vllm._moe_C", ("_moe_C", "topk_softmax")),
                     ("vllm.cumem_allocator", None)):
        status = try_import(name)
        if status == "ok" and op is not None:
            try:
                getattr(getattr(torch.ops, op[0]), op[1])
            except BaseException as exc:  # noqa: BLE001
                status = f"loaded, but torch.ops.{op[0]}.{op[1]} is missing: {error_text(exc)}"
        exts[name] = status
    result["extensions"] = exts

    result["platform"] = f"{type(platform).__name__} is_cuda={platform.is_cuda()} " \
                         f"capability={platform.get_device_capability()}"

    result["top_level"] = {name: try_import("vllm", name) for name in ("LLM", "LLMEngine", "SamplingParams")}
    result["core"] = {name: try_import(name) for name in CORE}
    try:
        import vllm.utils
        result["attention_backend_v0"] = platform.get_attn_backend_cls(
            None, 128, torch.float16, None, 16, False, False)
    except BaseException as exc:  # noqa: BLE001
        result["attention_backend_v0"] = error_text(exc)

    # cachetools internals that vllm.utils.LRUCache relies on.
    try:
        cache = vllm.utils.LRUCache(2)
        cache.put("a", 1)
        cache.put("b", 2)
        cache.get("a")
        cache.put("c", 3)
        assert list(cache.order) == ["a", "c"] and "b" not in cache, list(cache.order)
        result["lru_cache"] = "ok"
    except BaseException as exc:  # noqa: BLE001
        result["lru_cache"] = error_text(exc)

    from vllm.model_executor.models import registry
    models = {}
    for arch, (module, cls) in sorted(registry._VLLM_MODELS.items()):
        models[arch] = {"module": module,
                        "status": try_import(f"vllm.model_executor.models.{module}", cls)}
    result["registry"] = models
    result["seconds"] = round(time.monotonic() - start, 1)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "cli":
        sys.exit(run_console_script(sys.argv[2:]))
    try:
        main(Path(sys.argv[1]))
    except BaseException:  # noqa: BLE001
        Path(sys.argv[1]).write_text(json.dumps({"probe_crashed": traceback.format_exc()}) + "\n")
