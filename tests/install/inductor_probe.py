"""Compile for sm_70 the Triton kernels Inductor makes of the installed vLLM's compiled functions.

Run by tests/install with the Python of the venv that holds the built wheel
(torch 2.7.0 and Triton 3.3.0, what a V100 host runs):

    python inductor_probe.py OUT.json

Each case is a function the installed vLLM wraps in ``torch.compile`` on
V0's default paths, traced with the shapes of a real model on a faked V100
(tests/kernels/_inductor.py); every Triton kernel Inductor emits is
compiled for ``cuda:70`` in every launch configuration it would try.
Functions compiled with ``dynamic=True`` get every dimension symbolic;
the others compile first for the shape of the profiling run (static) and
again with the token dimension symbolic, as torch's automatic dynamic
shapes recompile them on the next batch size. Writes one JSON object;
exits 0 whatever failed (the test judges).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS.parent))

PROFILE_TOKENS = 8192  # a profiling run's token count (static first compile)


@dataclasses.dataclass
class Case:
    function: str            # vLLM's name for it
    model: str               # the model whose shapes it takes
    build: Callable          # (Inputs) -> (fn, args)


def _compiled(fn):
    """The Python function under vLLM's torch.compile decorator."""
    return getattr(fn, "_torchdynamo_orig_callable", fn)


def cases() -> list[Case]:
    import torch
    from vllm.model_executor.layers.fused_moe.fused_moe import grouped_topk
    from vllm.model_executor.layers.layernorm import GemmaRMSNorm
    from vllm.model_executor.layers.rejection_sampler import _multinomial
    from vllm.model_executor.layers.vocab_parallel_embedding import (
        get_masked_input_and_mask)
    from vllm.model_executor.models.commandr import layer_norm_func
    from vllm.model_executor.models.phi3_small import gegelu, quick_gelu

    half, f32 = torch.float16, torch.float32
    out: list[Case] = []

    def tokens(dynamic: bool) -> tuple[int, tuple]:
        return (PROFILE_TOKENS, (0,)) if dynamic else (PROFILE_TOKENS, ())

    # GemmaRMSNorm.forward_cuda: torch.compile(forward_static), default
    # dynamic; every norm of Gemma, Gemma 2 and Gemma 3 (the last one with
    # the residual), and Gemma 3's q/k norms over [tokens, heads, head_dim].
    norm = GemmaRMSNorm.forward_static
    for model, hidden in (("gemma-2-2b", 2304), ("gemma-2-9b", 3584),
                          ("gemma-3-27b", 5376)):
        for dynamic in (False, True):
            for residual in (False, True):
                def build(inputs, hidden=hidden, dynamic=dynamic,
                          residual=residual):
                    n, dyn = tokens(dynamic)
                    x = inputs.tensor((n, hidden), half, dyn)
                    w = inputs.tensor((hidden,), half)
                    if residual:
                        r = inputs.tensor((n, hidden), half, dyn)
                        return (lambda w, x, r: norm(w, 1e-6, x, r)), (w, x, r)
                    return (lambda w, x: norm(w, 1e-6, x, None)), (w, x)
                out.append(Case("GemmaRMSNorm.forward_static",
                                f"{model} hidden {hidden}"
                                f"{' +residual' if residual else ''}"
                                f"{' dynamic' if dynamic else ' static'}",
                                build))
    for dynamic in (False, True):
        def build(inputs, dynamic=dynamic):
            n, dyn = tokens(dynamic)
            q = inputs.tensor((n, 32, 128), half, dyn)
            w = inputs.tensor((128,), half)
            return (lambda w, q: norm(w, 1e-6, q, None)), (w, q)
        out.append(Case("GemmaRMSNorm.forward_static",
                        "gemma-3-27b q_norm [tokens, 32, 128]"
                        f"{' dynamic' if dynamic else ' static'}", build))

    # grouped_topk (dynamic=True): DeepSeek-V2-Lite, V2, V3/R1.
    topk = _compiled(grouped_topk)
    for model, experts, groups, kept, k, scoring, bias, renorm in (
            ("deepseek-v2-lite", 64, 1, 1, 6, "softmax", False, False),
            ("deepseek-v2", 160, 8, 3, 6, "softmax", False, False),
            ("deepseek-v3", 256, 8, 4, 8, "sigmoid", True, True)):
        def build(inputs, experts=experts, groups=groups, kept=kept, k=k,
                  scoring=scoring, bias=bias, renorm=renorm):
            h = inputs.tensor((64, 16), half, (0, 1))
            g = inputs.tensor((64, experts), half, (0, 1))
            args = [h, g]
            if bias:
                args.append(inputs.tensor((experts,), f32, (0,)))
            def fn(h, g, b=None):
                return topk(h, g, k, renorm, groups, kept, scoring, b)
            return fn, tuple(args)
        out.append(Case("grouped_topk",
                        f"{model}: {experts} experts, {groups} groups, "
                        f"top-{kept} groups, top-{k}, {scoring}", build))

    # get_masked_input_and_mask (dynamic=True): VocabParallelEmbedding at
    # TP 2, rank 1, Llama-3-8B's vocabulary (128,256; no added tokens).
    masked = _compiled(get_masked_input_and_mask)

    def build_masked(inputs):
        ids = inputs.tensor((PROFILE_TOKENS,), torch.int64, (0,))
        return (lambda ids: masked(ids, 64128, 128256, 0, 128256, 128256)), \
            (ids,)
    out.append(Case("get_masked_input_and_mask",
                    "llama-3-8b vocab 128256 at TP 2", build_masked))

    # _multinomial (dynamic=True): the V0 rejection sampler's recovered
    # tokens, unseeded, Llama-2's vocabulary.
    multinomial = _compiled(_multinomial)

    def build_multinomial(inputs):
        probs = inputs.tensor((64, 32000), f32, (0, 1))
        return (lambda p: multinomial(p, 1, 1, {})), (probs,)
    out.append(Case("rejection_sampler._multinomial",
                    "vocab 32000, one sample", build_multinomial))

    # Command-R's layer_norm_func (default dynamic): input norms and
    # Command-R+'s q/k norms with a [heads, head_dim] weight.
    layer_norm = _compiled(layer_norm_func)
    for model, shape, weight in (
            ("command-r hidden 8192", (8192,), (8192,)),
            ("cohere2 (command-r7b) hidden 4096", (4096,), (4096,)),
            ("command-r-plus q_norm [tokens, 96, 128]", (96, 128), (96, 128))):
        for dynamic in (False, True):
            def build(inputs, shape=shape, weight=weight, dynamic=dynamic):
                n, dyn = tokens(dynamic)
                x = inputs.tensor((n, *shape), half, dyn)
                w = inputs.tensor(weight, half)
                return (lambda x, w: layer_norm(x, w, 1e-5)), (x, w)
            out.append(Case("commandr.layer_norm_func",
                            f"{model}{' dynamic' if dynamic else ' static'}",
                            build))

    # Phi-3-small's activations (dynamic=True).
    gelu, geg = _compiled(quick_gelu), _compiled(gegelu)
    out.append(Case("phi3_small.quick_gelu", "phi-3-small [tokens, 16384]",
                    lambda inputs: (gelu, (inputs.tensor(
                        (PROFILE_TOKENS, 16384), half, (0, 1)),))))
    out.append(Case("phi3_small.gegelu", "phi-3-small [tokens, 28672], limit 20",
                    lambda inputs: ((lambda x: geg(x, 20.0)), (inputs.tensor(
                        (PROFILE_TOKENS, 28672), half, (0, 1)),))))
    return out


def run_case(case: Case, directory: Path) -> dict:
    from tests.kernels import _inductor
    start = time.monotonic()
    record: dict = {"function": case.function, "model": case.model,
                    "kernels": [], "error": ""}
    try:
        inputs = _inductor.Inputs()
        fn, args = case.build(inputs)
        for kernel in _inductor.generate(fn, args):
            launches = _inductor.compile_sm70(kernel, directory)
            record["kernels"].append({
                "name": kernel.name, "uses_dot": kernel.uses_dot,
                "launches": [dataclasses.asdict(x) for x in launches]})
    except Exception as exc:  # noqa: BLE001 - the probe reports, the test judges
        text = "".join(traceback.format_exception_only(type(exc), exc))
        record["error"] = text.strip().splitlines()[-1][:400]
        if os.environ.get("VLLM_VOLTA_TRACE"):
            traceback.print_exc()
    record["seconds"] = round(time.monotonic() - start, 1)
    return record


def control(directory: Path) -> dict:
    """The check's negative control: the first Gemma norm kernel with its
    body swapped for an fp16 ``tl.dot`` (16x16 tiles of its own inputs),
    the construct Triton 3.3.0 cannot compile for sm_70. Compiled by the
    same step, it must fail."""
    import torch
    from tests.kernels import _aot, _inductor
    inputs = _inductor.Inputs()
    norm = __import__("vllm.model_executor.layers.layernorm",
                      fromlist=["GemmaRMSNorm"]).GemmaRMSNorm.forward_static
    x = inputs.tensor((256, 256), torch.float16)
    w = inputs.tensor((256,), torch.float16)
    (kernel, *_) = _inductor.generate(lambda w, x: norm(w, 1e-6, x, None),
                                      (w, x))
    head = kernel.source[:kernel.source.index("):\n", kernel.source.index(
        f"def {kernel.name}(")) + 3]
    out_ptr = re.search(r"out_ptr\d+", head).group(0)
    body = ("    offs = tl.arange(0, 16)\n"
            "    tile = offs[:, None] * 16 + offs[None, :]\n"
            "    a = tl.load(in_ptr0 + tile)\n"
            "    b = tl.load(in_ptr1 + tile)\n"
            f"    tl.store({out_ptr} + tile, tl.dot(a, b).to(tl.float16))\n")
    dotted = _inductor.Generated(kernel.name + "_dot", (head + body).replace(
        f"def {kernel.name}(", f"def {kernel.name}_dot("))
    launches = _inductor.compile_sm70(dotted, directory)
    # The same source for sm_80 (the device properties in its decorator
    # changed): it compiles, so the failure above is sm_70's.
    ampere = _inductor.Generated(dotted.name + "_sm80", dotted.source.replace(
        "cc=70, major=7", "cc=80, major=8").replace(
        f"def {dotted.name}(", f"def {dotted.name}_sm80("))
    with _aot.target(80):
        on_80 = _inductor.compile_sm70(ampere, directory)
    return {"kernel": dotted.name, "uses_dot": dotted.uses_dot,
            "launches": [dataclasses.asdict(x) for x in launches],
            "sm80": [dataclasses.asdict(x) for x in on_80]}


def main(out: Path, only: str = "") -> None:
    import torch
    import triton

    from tests.install.probe import pretend_cuda_host
    platform = pretend_cuda_host()
    from tests.kernels import _inductor
    _inductor.fake_v100(70)
    result = {"torch": torch.__version__, "triton": triton.__version__,
              "simple_compile_backend": platform.simple_compile_backend,
              "cases": []}
    with tempfile.TemporaryDirectory(prefix="inductor-sm70-") as tmp:
        for case in cases():
            if only and only not in case.function:
                continue
            record = run_case(case, Path(tmp))
            print(f"[inductor] {case.function} {case.model}: "
                  f"{len(record['kernels'])} kernel(s), {record['seconds']} s"
                  f"{' ERROR ' + record['error'] if record['error'] else ''}",
                  file=sys.stderr, flush=True)
            result["cases"].append(record)
        try:
            result["control"] = control(Path(tmp))
        except Exception as exc:  # noqa: BLE001
            result["control"] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
