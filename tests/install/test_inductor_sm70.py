"""The Triton kernels Inductor generates from the installed vLLM compile for sm_70.

vLLM wraps a few functions in ``torch.compile`` even on V0 (GemmaRMSNorm,
``grouped_topk``, ``get_masked_input_and_mask``, the rejection sampler's
``_multinomial``, Command-R's ``layer_norm_func``, Phi-3-small's
activations). On a V100 the torch 2.7.0 and Triton 3.3.0 of this venv turn
them into Triton kernels at the profiling run. inductor_probe.py generates
those kernels on a faked V100 with the same torch, with real models' shapes,
and compiles each launch configuration for ``cuda:70``; its negative control
is an fp16 ``tl.dot`` (the construct Triton 3.3.0 cannot compile for
sm_70), which must fail there and compile for sm_80.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kernels._aot import VOLTA_MAX_SHARED

HERE = Path(__file__).resolve().parent

FUNCTIONS = {
    "GemmaRMSNorm.forward_static", "grouped_topk", "get_masked_input_and_mask",
    "rejection_sampler._multinomial", "commandr.layer_norm_func",
    "phi3_small.quick_gelu", "phi3_small.gegelu",
}


@pytest.fixture(scope="module")
def inductor(installed, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("inductor") / "inductor.json"
    proc = installed.run(str(HERE / "inductor_probe.py"), str(out), timeout=900)
    if not out.exists():
        pytest.fail(f"inductor_probe.py wrote nothing (exit {proc.returncode}): "
                    f"{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def launches(case: dict) -> list[dict]:
    return [launch for kernel in case["kernels"] for launch in kernel["launches"]]


def test_host_stack_and_backend(inductor):
    assert inductor["torch"].startswith("2.7.0")
    assert inductor["triton"] == "3.3.0"
    # The backend vLLM passes to these torch.compile calls on CUDA.
    assert inductor["simple_compile_backend"] == "inductor"


def test_every_function_generates_kernels(inductor):
    assert {case["function"] for case in inductor["cases"]} == FUNCTIONS
    failed = {f"{c['function']} / {c['model']}": c["error"]
              for c in inductor["cases"] if c["error"] or not c["kernels"]}
    assert not failed, failed


def test_every_launch_compiles_for_sm70(inductor):
    bad = [f"{c['function']} / {c['model']}: {launch['kernel']} {launch['config']}: "
           f"{launch['error'] or 'arch ' + str(launch['arch'])}"
           for c in inductor["cases"] for launch in launches(c)
           if launch["error"] or launch["arch"] != 70]
    assert not bad, bad
    assert sum(len(launches(c)) for c in inductor["cases"]) >= len(inductor["cases"])


def test_fits_a_volta_block_without_tensor_core_dots(inductor):
    for case in inductor["cases"]:
        for kernel in case["kernels"]:
            assert not kernel["uses_dot"], (case["function"], kernel["name"])
        for launch in launches(case):
            assert launch["shared"] <= VOLTA_MAX_SHARED, (case["model"], launch)
            assert launch["spill"] == 0, (case["model"], launch)


def test_negative_control_fails_on_sm70_only(inductor):
    control = inductor["control"]
    assert "error" not in control, control.get("error")
    assert control["uses_dot"]
    assert control["launches"] and all(
        "PassManager::run failed" in launch["error"] for launch in control["launches"])
    assert control["sm80"] and all(
        not launch["error"] for launch in control["sm80"])
    assert all(launch["arch"] == 80 for launch in control["sm80"])
