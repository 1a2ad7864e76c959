"""The validation plan: the strategy note's success criteria as ordered steps.

1. doctor        environment facts judged (GPU 7.0, driver, torch sm_70, +volta, TORCH_SDPA)
2. import        ``python -c "import vllm; print(vllm.__version__)"``
3. serve-1gpu    Qwen/Qwen2.5-0.5B-Instruct --dtype half --max-model-len 2048
                 --gpu-memory-utilization 0.5, fixed prompts, greedy, garbage check
4. serve-tp2     mistralai/Mistral-7B-Instruct-v0.3 --tensor-parallel-size 2 (>= 2 GPUs)
5. serve-tp4     the same at TP=4 (>= 4 GPUs)
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vllm_volta.ship.validate.garbage import PromptCase
from vllm_volta.ship.validate.prompts import CASES

SINGLE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
TP_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"
# The strategy note's runtime settings (section 1.2 and 1.3).
STRATEGY_ENV = {
    "NCCL_CUMEM_ENABLE": "0",
    "NCCL_PROTO": "simple",
    "VLLM_ATTENTION_BACKEND": "TORCH_SDPA",
}


@dataclass
class Options:
    single_model: str = SINGLE_MODEL
    tp_model: str = TP_MODEL
    tp_sizes: tuple[int, ...] = (2, 4)
    require_tp: bool = False
    strategy_env: bool = True
    allow_non_volta: bool = False
    startup_timeout_s: float = 900.0
    tp_startup_timeout_s: float = 1800.0
    request_timeout_s: float = 120.0


@dataclass
class Step:
    id: str
    title: str
    kind: str  # doctor | import | serve
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    gpus_needed: int = 0
    startup_timeout_s: float = 0.0
    cases: tuple[PromptCase, ...] = ()
    skip_reason: str | None = None

    def shell(self, port: str = "<free port>") -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        argv = [a.replace("{port}", port) for a in self.argv]
        return (env + " " if env else "") + " ".join(
            a if a == port else shlex.quote(a) for a in argv
        )


def vllm_command() -> list[str]:
    """``vllm`` beside this interpreter, else the module that backs it."""
    beside = Path(sys.executable).with_name("vllm")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("vllm")
    return [found] if found else [sys.executable, "-m", "vllm.entrypoints.cli.main"]


def serve_argv(model: str, *, tp: int, max_len: int, mem: float, port_placeholder: str = "{port}") -> list[str]:
    argv = vllm_command() + [
        "serve", model,
        "--dtype", "half",
        "--max-model-len", str(max_len),
        "--gpu-memory-utilization", str(mem),
    ]
    if tp > 1:
        argv += ["--tensor-parallel-size", str(tp)]
    return argv + ["--host", "127.0.0.1", "--port", port_placeholder]


def build_plan(options: Options, gpu_count: int | None) -> list[Step]:
    """``gpu_count`` None means unknown (a dry run on a machine without GPUs)."""
    env = dict(STRATEGY_ENV) if options.strategy_env else {}
    steps = [
        Step("doctor", "environment doctor", "doctor"),
        Step("import", "import vllm", "import",
             argv=[sys.executable, "-c", "import vllm; print(vllm.__version__)"], env=env),
        Step("serve-1gpu", f"single GPU: {options.single_model}", "serve",
             argv=serve_argv(options.single_model, tp=1, max_len=2048, mem=0.5), env=env,
             model=options.single_model, gpus_needed=1,
             startup_timeout_s=options.startup_timeout_s, cases=CASES),
    ]
    for tp in options.tp_sizes:
        step = Step(f"serve-tp{tp}", f"tensor parallel {tp}: {options.tp_model}", "serve",
                    argv=serve_argv(options.tp_model, tp=tp, max_len=4096, mem=0.9), env=env,
                    model=options.tp_model, gpus_needed=tp,
                    startup_timeout_s=options.tp_startup_timeout_s, cases=CASES)
        if gpu_count is not None and gpu_count < tp:
            step.skip_reason = f"needs {tp} GPUs, found {gpu_count}"
        steps.append(step)
    return steps


def describe_plan(steps: list[Step], options: Options, gpu_count: int | None, report: Path) -> str:
    """The text of ``--dry-run``."""
    found = "unknown" if gpu_count is None else str(gpu_count)
    lines = [f"vllm-volta V100 validation plan (GPUs found: {found})", f"report: {report}", ""]
    for number, step in enumerate(steps, 1):
        lines.append(f"{number}. [{step.id}] {step.title}")
        if step.kind == "doctor":
            lines.append("   checks: GPU capability 7.0, NVIDIA driver >= 525.60, torch CUDA 12 runtime,")
            lines.append("           torch arch list has sm_70, vllm version has +volta (not .empty),")
            lines.append("           vllm-volta pins it, provenance present, attention backend TORCH_SDPA,")
            lines.append("           VLLM_USE_V1 != 1, VLLM_ATTENTION_BACKEND, NCCL_CUMEM_ENABLE, NCCL_PROTO")
        else:
            lines.append(f"   $ {step.shell()}")
        if step.kind == "serve":
            lines.append(f"   wait for GET /health (up to {step.startup_timeout_s:.0f} s); send the prompts below;")
            lines.append("   judge each completion; the server log must name an SDPA attention backend; stop it")
        if step.skip_reason:
            lines.append(f"   SKIPPED: {step.skip_reason}"
                         + (" (fails: --require-tp)" if options.require_tp else ""))
        elif step.gpus_needed > 1 and gpu_count is None:
            lines.append(f"   runs only with >= {step.gpus_needed} GPUs")
    cases = next((s.cases for s in steps if s.cases), ())
    if cases:
        lines += ["", "prompts (POST /v1/completions, temperature 0, logprobs 1), expected words:"]
        for case in cases:
            groups = " and ".join("/".join(g) for g in case.expect)
            prompt = case.prompt if len(case.prompt) < 60 else case.prompt[:40] + f"... ({len(case.prompt)} chars)"
            lines.append(f"  - {case.id}: {prompt!r} -> {groups}")
        lines += ["garbage rules: runs of 4+ '!', 12+ repeats of one character, 8+ repeats of one token,",
                  "  NaN or -inf (-9999) log-probs, control/unassigned/U+FFFD characters, empty text,",
                  "  missing expected words"]
    lines += ["", "exit status: 0 when every step passes (skips allowed unless --require-tp), 1 otherwise"]
    return "\n".join(lines)
