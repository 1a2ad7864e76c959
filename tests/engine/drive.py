"""The engine proof on the machine it runs on: all jobs, the server, a record.

``python -m tests.engine.drive --out DIR [--record FILE.md] [--jobs a,b]``

- On a V100: the installed vLLM (the +volta wheel), natively.
- On another CUDA GPU: the vLLM tree (VLLM_VOLTA_TREE, default upstream/)
  with compute capability forced to 7.0 and vLLM's ops built from its
  csrc/ (VLLM_VOLTA_OPS_EXT names a built library; else it is built into
  DIR/ops); every report says so.
- Without a CUDA GPU: nothing to run; says so and exits 0 (the CPU parts
  are tests/engine's unit tests).

Jobs run as parallel processes sharing the GPU (KV cache sizes fixed), one
log each under DIR/logs; each writes DIR/results/<job>.json, and its path
evidence goes to DIR/paths/<job>/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.engine import record
from tests.engine.jobs import JOBS

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "support" / "volta_site"
JOB_TIMEOUT_S = 900


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _machine() -> dict:
    import torch
    if not torch.cuda.is_available():
        return {"cuda": False}
    major, minor = torch.cuda.get_device_capability()
    info = {"cuda": True, "gpu": torch.cuda.get_device_name(),
            "capability": f"{major}.{minor}", "native": (major, minor) == (7, 0),
            "torch": torch.__version__, "cuda_version": torch.version.cuda,
            "python": sys.version.split()[0]}
    for name in ("triton", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = "-"
    return info


def _tree() -> Path:
    tree = Path(os.environ.get("VLLM_VOLTA_TREE") or ROOT / "upstream")
    return tree if tree.is_absolute() else (ROOT / tree).resolve()


def _dist_info(out: Path) -> Path:
    """vLLM finds its CUDA platform through its installed metadata."""
    where = out / "distinfo"
    meta = where / "vllm-0.9.2.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vllm\nVersion: 0.9.2\n")
    return where


def _ops(out: Path, tree: Path) -> str:
    prebuilt = os.environ.get("VLLM_VOLTA_OPS_EXT")
    if prebuilt:
        return prebuilt
    from tests.support.vllm_ops import build
    log("building vLLM's ops from the tree's csrc/ (minutes) ...")
    path, seconds = build.load_ops(tree / "csrc", out / "ops")
    log(f"built {path} in {seconds:.0f} s")
    return path


def environment(out: Path, machine: dict) -> dict:
    env = os.environ.copy()
    paths = [str(SITE), str(ROOT)]
    env["VLLM_USE_V1"] = "0"
    env["VLLM_VOLTA_SHARED_GPU"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if not machine["native"]:
        tree = _tree()
        env["VLLM_VOLTA_FORCE_CC"] = "7.0"
        env["VLLM_VOLTA_OPS_EXT"] = _ops(out, tree)
        paths += [str(tree), str(_dist_info(out))]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    return env


def _start(job: str, out: Path, env: dict) -> subprocess.Popen:
    job_env = dict(env, VLLM_VOLTA_PATH_LOG=str(out / "paths" / job))
    if job == "server":
        cmd = [sys.executable, "-m", "tests.engine.server",
               "--models", str(out / "models"),
               "--out", str(out / "results" / "server.json"),
               "--log", str(out / "logs" / "server-vllm.log")]
    else:
        cmd = [sys.executable, "-m", "tests.engine.runner", job,
               "--models", str(out / "models"),
               "--out", str(out / "results" / f"{job}.json")]
    logf = open(out / "logs" / f"{job}.log", "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=job_env, stdout=logf,
                            stderr=subprocess.STDOUT)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--jobs", default=",".join(list(JOBS) + ["server"]))
    parser.add_argument("--timeout", type=int, default=JOB_TIMEOUT_S,
                        help="seconds before unfinished jobs are killed")
    args = parser.parse_args(argv)
    machine = _machine()
    if not machine["cuda"]:
        log("no CUDA GPU here: the engine runs are skipped (the CPU parts "
            "run in tests/engine's unit tests)")
        return 0
    out = args.out.resolve()
    for sub in ("logs", "results", "paths", "models"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    where = ("natively on SM 7.0" if machine["native"] else
             f"on {machine['gpu']} (SM {machine['capability']}) with compute "
             "capability FORCED to 7.0")
    log(f"engine proof {where}")
    started = time.monotonic()
    env = environment(out, machine)
    from tests.support import tiny_models
    jobs = [j for j in args.jobs.split(",") if j]
    for name in tiny_models.FAMILIES:
        tiny_models.make(name, out / "models")
    for name in tiny_models.QUANTIZED:
        if name in jobs:
            tiny_models.make_quantized(name, out / "models")
    procs = {job: _start(job, out, env) for job in jobs}
    while any(p.poll() is None for p in procs.values()):
        time.sleep(10)
        running = [j for j, p in procs.items() if p.poll() is None]
        log(f"{len(procs) - len(running)}/{len(procs)} jobs done; running: "
            f"{', '.join(running)}")
        if time.monotonic() - started > args.timeout:
            for job in running:
                procs[job].kill()
                log(f"{job}: killed after {args.timeout} s")
    codes = {job: p.returncode for job, p in procs.items()}
    machine["seconds"] = round(time.monotonic() - started)
    machine["forced"] = not machine["native"]
    machine["tree_commit"] = os.environ.get("VLLM_VOLTA_TREE_COMMIT", "-")
    machine["ops_ext"] = env.get("VLLM_VOLTA_OPS_EXT", "the wheel's vllm._C")
    (out / "machine.json").write_text(json.dumps(machine, indent=1))
    text = record.render(out, machine, codes, " ".join(sys.argv))
    (out / "record.md").write_text(text)
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(text)
    log(f"record: {out / 'record.md'}; exit codes {codes}")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
