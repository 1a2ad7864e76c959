"""Render an engine run (drive.py's output folder) as a Markdown record."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tests.engine.jobs import JOBS


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _merge_paths(folder: Path) -> dict:
    merged: dict = {"ops": {}, "triton": {}, "attention_backends": {},
                    "flash_modules": set()}
    for f in sorted(folder.glob("*.json")):
        data = _load(f) or {}
        for kind in ("ops", "triton", "attention_backends"):
            for key, n in data.get(kind, {}).items():
                merged[kind][key] = merged[kind].get(key, 0) + n
        merged["flash_modules"].update(data.get("flash_modules", []))
    merged["flash_modules"] = sorted(merged["flash_modules"])
    return merged


def _row(job: str, family: str, mode: str, data: dict) -> str:
    s = data.get("summary", {})
    facts = data.get("facts", {})
    extra = []
    if "preemptions" in facts and mode == "preemption":
        extra.append(f"preemptions {facts['preemptions']}")
    if mode == "prefix-caching" and "prefix_hit_rate" in facts:
        extra.append(f"prefix hit rate {facts['prefix_hit_rate']}")
    if "init_s" in data:
        extra.append(f"init {data['init_s']} s")
    if not s.get("ok"):
        extra += [f.replace("|", "/") for f in s.get("failures", [])]
    if "steps" not in s:
        cells = ["-"] * 5
    elif s.get("steps") == 1:  # embeddings
        cells = [f"{s['full_match']}/{s['prompts']} cos>=0.999", "-", "-",
                 "-", f"{s['logprob_gap']:.1e} (1-cos)"]
    else:
        cells = [f"{s['exact_min']}/{s['steps']}",
                 f"{s['full_match']}/{s['prompts']}",
                 str(s["near_ties"]), str(s["not_top5"]),
                 f"{s['logprob_gap']:.3f}"]
    return (f"| {family} | {mode} | " + " | ".join(cells) +
            f" | {facts.get('dtype', '-')} | "
            f"{facts.get('attention_backend', '-')} | "
            f"{'; '.join(extra)} | {'pass' if s.get('ok') else '**FAIL**'} |")


def render(out: Path, machine: dict, codes: dict, command: str) -> str:
    forced = machine.get("forced")
    lines = [
        "# Engine run: the V0 engine and server on tiny models vs transformers",
        "",
        "| | |", "| --- | --- |",
        f"| date | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |",
        f"| GPU | {machine.get('gpu')} (SM {machine.get('capability')}) |",
        f"| path | {'compute capability FORCED to 7.0 (not a V100)' if forced else 'native SM 7.0'} |",
        f"| software | Python {machine.get('python')}, torch {machine.get('torch')} "
        f"(CUDA {machine.get('cuda_version')}), Triton {machine.get('triton')}, "
        f"transformers {machine.get('transformers')} |",
        f"| vLLM tree | {machine.get('tree_commit')} |",
        f"| compiled ops | {machine.get('ops_ext')} |",
        f"| wall time | {machine.get('seconds')} s |",
        "", "Command:", "", "```", command, "```", "",
        "Columns: `exact` is the fewest leading greedy steps equal to the "
        "float32 reference over the mode's prompts; `full` how many prompts "
        "matched all steps; `near-tie` partings where each token is in the "
        "other's top 5 (allowed); `not top-5` partings that are not (fail); "
        "`gap` the largest |log-prob difference| of a token in both top-5 "
        "lists over the matched steps (nats, fp16 engine vs fp32 "
        "reference).", "",
        "Ops not built from csrc/ (reference implementations, off the Volta "
        "path: CUTLASS capability queries, False on 7.0): "
        "_C.cutlass_scaled_mm_supports_fp8, "
        "_C.cutlass_scaled_mm_supports_block_fp8, "
        "_C.cutlass_group_gemm_supported, "
        "_C.cutlass_sparse_scaled_mm_supported "
        "(tests/support/volta_site/volta_reference_ops.py)." if forced else
        "", "",
        "| model | mode | exact | full | near-tie | not top-5 | gap | dtype "
        "| attention | notes | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    evidence = []
    for job in JOBS:
        if job not in codes:
            continue
        data = _load(out / "results" / f"{job}.json")
        family = JOBS[job][0]
        if data is None:
            lines.append(f"| {family} | ({job}) | - | - | - | - | - | - | - "
                         f"| no result (exit {codes[job]}) | **FAIL** |")
            continue
        if data.get("error"):
            lines.append(f"| {family} | ({job}) | - | - | - | - | - | - | - "
                         f"| {data['error'][:200]} | **FAIL** |")
        for mode, mdata in data.get("modes", {}).items():
            lines.append(_row(job, family, mode, mdata))
        evidence.append((job, _merge_paths(out / "paths" / job)))
    server = _load(out / "results" / "server.json") if "server" in codes else None
    if "server" in codes:
        lines += ["", "## Server: `vllm serve` tiny Llama, openai client", ""]
        if server is None:
            lines.append(f"no result (exit {codes['server']})")
        else:
            lines += [f"`{server.get('command', '')}`", "",
                      "| request | garbage detector | equals reference | text |",
                      "| --- | --- | --- | --- |"]
            for c in server.get("cases", []):
                lines.append(
                    f"| {c['case']} | {'ok' if c['garbage_ok'] else 'FAIL: ' + '; '.join(c['findings'])} "
                    f"| {'yes' if c['matches_reference'] else 'no (expected ' + c['expected'][:60] + ')'} "
                    f"| {c['text'][:80]} |")
            if server.get("error"):
                lines.append(f"\nerror: {server['error']}")
            lines.append(f"\nresult: {'pass' if server.get('ok') else '**FAIL**'}")
        evidence.append(("server", _merge_paths(out / "paths" / "server")))
    lines += ["", "## Path evidence (every process of the job)", ""]
    for job, ev in evidence:
        ops = ", ".join(f"{k} ({v})" for k, v in sorted(ev["ops"].items()))
        tri = ", ".join(f"{k} ({v})" for k, v in sorted(ev["triton"].items()))
        att = ", ".join(sorted(ev["attention_backends"]))
        lines += [f"- **{job}**: attention {att or '-'}; "
                  f"FlashAttention/FlashInfer modules: "
                  f"{', '.join(ev['flash_modules']) or 'none'}",
                  f"  - compiled ops: {ops or '-'}",
                  f"  - Triton launches: {tri or 'none'}"]
    return "\n".join(lines) + "\n"
