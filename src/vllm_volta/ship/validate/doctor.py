"""Environment doctor for a V100 host: gather facts, then judge them.

``gather_facts()`` asks nvidia-smi, importlib.metadata and a child process
that imports torch and vllm (``probe.py``); ``diagnose(facts)`` is pure and
takes a plain dict, so tests inject the facts of any host. Stdlib only.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Mapping

from vllm_volta.ship.provenance import read_installed_provenance

PASS, WARN, FAIL, INFO = "pass", "warn", "fail", "info"
ENV_PREFIXES = ("VLLM_", "NCCL_", "CUDA_", "TORCH_CUDA_", "PYTORCH_CUDA_")
ENV_NAMES = ("LD_LIBRARY_PATH", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_SECRET_RE = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
MIN_DRIVER_CUDA12 = (525, 60)  # CUDA 12.x minor-version compatibility floor


@dataclass(frozen=True)
class Check:
    id: str
    status: str
    detail: str
    hint: str = ""


def relevant_env(env: Mapping[str, str]) -> dict[str, str]:
    picked = {
        k: v for k, v in env.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES
    }
    return {k: ("***" if _SECRET_RE.search(k) else v) for k, v in sorted(picked.items())}


def nvidia_smi() -> tuple[list[dict], str | None, str | None]:
    query = "index,name,compute_cap,driver_version,memory.total"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [], None, f"nvidia-smi: {exc}"
    gpus, driver = [], None
    for line in out.strip().splitlines():
        index, name, cap, driver, memory = (p.strip() for p in line.split(","))
        major, _, minor = cap.partition(".")
        gpus.append({"index": int(index), "name": name,
                     "capability": [int(major), int(minor or 0)], "memory_mib": int(float(memory))})
    return gpus, driver, None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _meta_requires() -> list[str]:
    try:
        return list(metadata.requires("vllm-volta") or [])
    except metadata.PackageNotFoundError:
        return []


def run_probe(timeout: float = 300, with_vllm: bool = True, env: Mapping[str, str] | None = None) -> dict:
    script = Path(__file__).with_name("probe.py")
    command = [sys.executable, str(script)] + ([] if with_vllm else ["--no-vllm"])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else dict(env))
    except subprocess.TimeoutExpired:
        return {"error": f"probe timed out after {timeout:.0f} s importing torch/vllm"}
    marker = done.stdout.rfind("@@PROBE@@")
    if marker < 0:
        tail = (done.stderr or done.stdout)[-2000:]
        return {"error": f"probe exited {done.returncode} without a result: {tail}"}
    return json.loads(done.stdout[marker + len("@@PROBE@@"):].strip().splitlines()[0])


def gather_facts(env: Mapping[str, str] | None = None, *, probe_timeout: float = 300) -> dict:
    """Facts of this host; torch and vllm are probed in a child run with ``env``."""
    env = os.environ if env is None else env
    gpus, driver, smi_error = nvidia_smi()
    provenance, provenance_path = read_installed_provenance("vllm")
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nvidia_smi": {"gpus": gpus, "driver_version": driver, "error": smi_error},
        "distributions": {
            name: _dist_version(name) for name in ("vllm", "vllm-volta", "torch", "triton", "xformers")
        },
        "vllm_volta_requires": _meta_requires(),
        "provenance": provenance,
        "provenance_path": provenance_path,
        "probe": run_probe(probe_timeout, env=env),
        "env": relevant_env(env),
    }


def gpus_of(facts: dict) -> list[dict]:
    smi = (facts.get("nvidia_smi") or {}).get("gpus") or []
    return smi or ((facts.get("probe") or {}).get("torch") or {}).get("gpus") or []


def _driver_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def _check_gpus(facts: dict, allow_non_volta: bool) -> list[Check]:
    gpus = gpus_of(facts)
    if not gpus:
        err = (facts.get("nvidia_smi") or {}).get("error") or "torch sees no CUDA device"
        return [Check("gpu.present", FAIL, f"no GPU found ({err})",
                      "Run on a V100 host with the NVIDIA driver loaded; check CUDA_VISIBLE_DEVICES.")]
    checks = [Check("gpu.present", PASS, f"{len(gpus)} GPU(s): " + ", ".join(g["name"] for g in gpus))]
    caps = sorted({tuple(g["capability"]) for g in gpus})
    if caps == [(7, 0)]:
        checks.append(Check("gpu.capability", PASS, "compute capability 7.0 (Volta) on every GPU"))
    else:
        shown = ", ".join(f"{a}.{b}" for a, b in caps)
        checks.append(Check(
            "gpu.capability", WARN if allow_non_volta else FAIL,
            f"compute capability {shown}; this kit validates 7.0 (V100)",
            "Run it on a V100 host, or pass --allow-non-volta for a smoke run elsewhere.",
        ))
    return checks


def _check_driver(facts: dict) -> list[Check]:
    driver = (facts.get("nvidia_smi") or {}).get("driver_version")
    if not driver:
        return [Check("driver", WARN, "driver version unknown (nvidia-smi not available)")]
    if _driver_tuple(driver) < MIN_DRIVER_CUDA12:
        return [Check("driver", FAIL, f"driver {driver} is older than 525.60, too old for CUDA 12",
                      "Install an NVIDIA driver of the 525 series or newer (535 LTS works on V100).")]
    return [Check("driver", PASS, f"driver {driver}")]


def _check_torch(facts: dict) -> list[Check]:
    torch = (facts.get("probe") or {}).get("torch") or {}
    if "error" in torch or not torch:
        return [Check("torch.import", FAIL, f"torch does not import: {torch.get('error', 'not probed')}",
                      "Install the stack vllm pins (torch==2.7.0) in this environment.")]
    checks = []
    cuda = torch.get("cuda")
    if not cuda:
        checks.append(Check("torch.cuda_runtime", FAIL, f"torch {torch['version']} is a CPU build",
                            "Install torch==2.7.0 from PyPI (a CUDA 12.6 build)."))
    elif not cuda.startswith("12."):
        checks.append(Check("torch.cuda_runtime", FAIL,
                            f"torch {torch['version']} uses CUDA {cuda}; CUDA 13 cannot run sm_70",
                            "Use a CUDA 12 build of torch 2.7.0."))
    else:
        checks.append(Check("torch.cuda_runtime", PASS, f"torch {torch['version']}, CUDA runtime {cuda}"))
    archs = set(torch.get("arch_list") or []) | set(re.findall(r"sm_\d+", torch.get("arch_flags") or ""))
    if "sm_70" in archs:
        checks.append(Check("torch.sm_70", PASS, "torch carries sm_70 kernels"))
    else:
        checks.append(Check("torch.sm_70", FAIL, f"torch arch list has no sm_70: {sorted(archs) or 'empty'}",
                            "Install a torch build whose torch.cuda.get_arch_list() includes sm_70."))
    if cuda and not torch.get("cuda_available"):
        checks.append(Check("torch.cuda_available", FAIL, "torch.cuda.is_available() is False",
                            "Check the driver and CUDA_VISIBLE_DEVICES."))
    return checks


def _check_vllm(facts: dict) -> list[Check]:
    dists = facts.get("distributions") or {}
    version = dists.get("vllm")
    if not version:
        return [Check("vllm.installed", FAIL, "distribution vllm is not installed",
                      "pip install vllm-volta==0.9.2.N from the private index (docs/install.md).")]
    checks = []
    local = version.partition("+")[2]
    if not local.startswith("volta."):
        checks.append(Check("vllm.version", FAIL, f"vllm {version} is not a +volta build",
                            "Install from the private index with the pinned command of docs/install.md."))
    elif "empty" in local.split("."):
        checks.append(Check("vllm.version", FAIL, f"vllm {version} is a test build without CUDA kernels",
                            "Install the CUDA build (0.9.2+volta.N without .empty)."))
    else:
        checks.append(Check("vllm.version", PASS, f"vllm {version}"))
    probe = (facts.get("probe") or {}).get("vllm") or {}
    if "error" in probe:
        checks.append(Check("vllm.import", FAIL, f"import vllm failed: {probe['error']}",
                            "Run `python -c 'import vllm'` to see the full error; reinstall vllm-volta."))
    elif probe:
        if probe.get("version") != version:
            checks.append(Check("vllm.import", WARN,
                                f"import vllm gives {probe.get('version')}, metadata says {version}",
                                "Another vllm shadows the installed one (PYTHONPATH, a source tree?)."))
        else:
            checks.append(Check("vllm.import", PASS, f"import vllm ok, platform {probe.get('platform')}"))
    meta = dists.get("vllm-volta")
    requires = facts.get("vllm_volta_requires") or []
    if not meta:
        checks.append(Check("vllm_volta.meta", WARN, "vllm-volta is not installed",
                            "Install with `pip install vllm-volta==0.9.2.N` so the pin is recorded."))
    elif f"vllm=={version}" not in [r.replace(" ", "") for r in requires]:
        checks.append(Check("vllm_volta.meta", FAIL, f"vllm-volta {meta} requires {requires}, installed vllm {version}",
                            "Reinstall: pip install --force-reinstall vllm-volta==<version>."))
    else:
        checks.append(Check("vllm_volta.meta", PASS, f"vllm-volta {meta} pins vllm=={version}"))
    provenance = facts.get("provenance")
    if provenance:
        summary = json.dumps({k: provenance[k] for k in ("version", "kernel_route", "series")
                              if k in provenance} or provenance, sort_keys=True)[:300]
        checks.append(Check("vllm.provenance", PASS, f"{facts.get('provenance_path')}: {summary}"))
    else:
        checks.append(Check("vllm.provenance", WARN, "no series provenance file in the installed vllm"))
    return checks


def _check_backend(facts: dict) -> list[Check]:
    probe = (facts.get("probe") or {}).get("vllm") or {}
    backends = probe.get("attention_backend")
    if not backends:
        return [Check("attention.backend", FAIL, "attention backend not resolved (vllm did not import)",
                      "Fix the vllm import first (see vllm.import).")]
    names = set(backends.values())
    if names == {"TORCH_SDPA"}:
        return [Check("attention.backend", PASS, "resolves to TORCH_SDPA (head sizes 64, 128)")]
    return [Check("attention.backend", FAIL, f"resolves to {backends}",
                  "Set VLLM_ATTENTION_BACKEND=TORCH_SDPA; the series must accept it on CUDA for V0.")]


def _check_env(facts: dict) -> list[Check]:
    env = facts.get("env") or {}
    checks = []
    if env.get("VLLM_USE_V1") == "1":
        checks.append(Check("env.VLLM_USE_V1", FAIL, "VLLM_USE_V1=1: the V1 engine refuses capability < 8",
                            "Unset VLLM_USE_V1 (vLLM then picks V0 on Volta) or set it to 0."))
    backend = env.get("VLLM_ATTENTION_BACKEND")
    if backend and backend != "TORCH_SDPA":
        checks.append(Check("env.VLLM_ATTENTION_BACKEND", FAIL, f"VLLM_ATTENTION_BACKEND={backend}",
                            "Set VLLM_ATTENTION_BACKEND=TORCH_SDPA (the strategy note's default)."))
    elif backend:
        checks.append(Check("env.VLLM_ATTENTION_BACKEND", PASS, "VLLM_ATTENTION_BACKEND=TORCH_SDPA"))
    cumem = env.get("NCCL_CUMEM_ENABLE")
    if cumem not in (None, "0"):
        checks.append(Check("env.NCCL_CUMEM_ENABLE", WARN, f"NCCL_CUMEM_ENABLE={cumem}",
                            "Unset it or set 0 (vLLM then sets 0 itself)."))
    proto = env.get("NCCL_PROTO")
    if len(gpus_of(facts)) >= 2 and (proto or "").lower() != "simple":
        checks.append(Check("env.NCCL_PROTO", WARN, f"NCCL_PROTO={proto or 'unset'}",
                            "The strategy note sets NCCL_PROTO=simple for multi-GPU runs."))
    triton = (facts.get("distributions") or {}).get("triton") or ""
    if triton.startswith("3.3."):
        checks.append(Check("triton", INFO, f"triton {triton}: fp16 tl.dot does not compile for sm_70",
                            "Kernels reached via fused MoE or prefix caching need the series' fixes."))
    return checks


def diagnose(facts: dict, *, allow_non_volta: bool = False) -> list[Check]:
    return (
        _check_gpus(facts, allow_non_volta)
        + _check_driver(facts)
        + _check_torch(facts)
        + _check_vllm(facts)
        + _check_backend(facts)
        + _check_env(facts)
    )


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def checks_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
