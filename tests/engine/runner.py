"""Run one job (jobs.py) in this process: reference, then the V0 engine.

``python -m tests.engine.runner JOB --models DIR --out FILE``

For each mode: the transformers float32 reference of the mode's prompt set
(computed once per set, on the GPU), then ``vllm.LLM`` with the mode's
configuration, greedy with top-5 log-probabilities (or embeddings), judged
by rules.py. Writes FILE (JSON): per mode its verdicts and figures, the
engine facts (dtype, attention backend, preemptions, prefix-cache hits),
and this process's path evidence (volta_paths, when recording).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path

from tests.engine import prompts, reference, rules
from tests.engine.jobs import JOBS, Mode
from tests.support.tiny_models import QUANTIZED, family_of, reference_dir


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _references(family, model_dir: Path, sets: set[str]) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = reference.load(model_dir, family.task, device)
    out = {}
    for name in sorted(sets):
        started = time.monotonic()
        ids = prompts.token_set(name)
        if family.task == "embed":
            out[name] = [reference.embedding(model, p) for p in ids]
        else:
            dec = [tt_start(family)] if family.task == "encdec" else None
            out[name] = [reference.greedy(model, p, rules.STEPS, dec)
                         for p in ids]
            if name == "base":
                from transformers import AutoTokenizer
                tok = AutoTokenizer.from_pretrained(model_dir)
                text_ids = tok(prompts.TEXT_PROMPT).input_ids
                out["text"] = reference.greedy(model, text_ids, rules.STEPS,
                                               dec)
                out["text_decoded"] = tok.decode(out["text"].tokens)
        log(f"reference {family.name}/{name}: {len(ids)} prompts, "
            f"{time.monotonic() - started:.1f} s on {device}")
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return out


def tt_start(family) -> int:
    from tests.support import tiny_tokenizer as tt
    return tt.EOS  # BART's decoder_start_token_id (tiny_models._bart)


def _engine_prompts(family, ids):
    from vllm.inputs import TokensPrompt
    if family.task == "encdec":
        return [{"encoder_prompt": TokensPrompt(prompt_token_ids=p),
                 "decoder_prompt": TokensPrompt(
                     prompt_token_ids=[tt_start(family)])} for p in ids]
    return [TokensPrompt(prompt_token_ids=p) for p in ids]


def _top_maps(completion) -> list[dict[int, float]]:
    return [{int(k): float(v.logprob) for k, v in step.items()}
            for step in (completion.logprobs or [])]


def _facts(llm) -> dict:
    engine = llm.llm_engine
    facts = {"dtype": str(engine.model_config.dtype)}
    worker = getattr(engine.model_executor, "driver_worker", None)
    worker = getattr(worker, "worker", worker)
    backend = getattr(getattr(worker, "model_runner", None), "attn_backend",
                      None)
    if backend is not None:
        facts["attention_backend"] = backend.get_name()
    try:
        scheduler = engine.scheduler[0]
        facts["preemptions"] = scheduler.num_cumulative_preemption
        from vllm.utils import Device
        facts["prefix_hit_rate"] = round(
            scheduler.block_manager.get_prefix_cache_hit_rate(Device.GPU), 3)
    except (AttributeError, IndexError, TypeError):
        pass
    return facts


def run_mode(family, model_dir: Path, mode: Mode, refs: dict) -> dict:
    from vllm import LLM, SamplingParams

    started = time.monotonic()
    kwargs = dict(model=str(model_dir), tokenizer=str(model_dir), seed=0,
                  dtype="auto", gpu_memory_utilization=0.3, swap_space=1,
                  **mode.engine)
    if family.task == "embed":
        kwargs["task"] = "embed"
    config = json.loads((model_dir / "config.json").read_text())
    positions = config.get("max_position_embeddings")
    if positions and kwargs.get("max_model_len", 0) > positions:
        kwargs["max_model_len"] = positions
    llm = LLM(**kwargs)
    init_s = time.monotonic() - started
    ids = prompts.token_set(mode.prompts)
    verdicts = []
    texts = {}
    if family.task == "embed":
        outs = llm.embed(_engine_prompts(family, ids))
        for out, ref in zip(outs, refs[mode.prompts]):
            verdicts.append(rules.compare_embedding(out.outputs.embedding, ref))
    else:
        params = SamplingParams(temperature=0.0, max_tokens=rules.STEPS,
                                logprobs=reference.TOP, ignore_eos=True)
        for _ in range(mode.rounds):
            outs = llm.generate(_engine_prompts(family, ids), params,
                                use_tqdm=False)
        for out, ref in zip(outs, refs[mode.prompts]):
            c = out.outputs[0]
            verdicts.append(rules.compare_greedy(
                list(c.token_ids), _top_maps(c), ref.tokens, ref.top))
        if mode.prompts == "base" and family.task == "generate":
            c = llm.generate(prompts.TEXT_PROMPT, params,
                             use_tqdm=False)[0].outputs[0]
            ref = refs["text"]
            v = rules.compare_greedy(list(c.token_ids), _top_maps(c),
                                     ref.tokens, ref.top)
            same_text = c.text.strip() == refs["text_decoded"].strip()
            if v.exact == v.steps and not same_text:
                v = rules.Verdict(False, v.exact, v.steps, None,
                                  v.logprob_gap, "text differs from the "
                                  f"reference's decode: {c.text[:60]!r}")
            verdicts.append(v)
            texts = {"engine": c.text, "reference": refs["text_decoded"]}
    facts = _facts(llm)
    summary = rules.summarise(verdicts)
    if mode.expect == "preempted" and not facts.get("preemptions"):
        summary["ok"] = False
        summary["failures"].append("no preemption happened")
    if mode.expect == "prefix_hits" and not facts.get("prefix_hit_rate"):
        summary["ok"] = False
        summary["failures"].append("no prefix-cache hit")
    result = {"summary": summary, "facts": facts, "texts": texts,
              "verdicts": [v.to_json() for v in verdicts],
              "init_s": round(init_s, 1),
              "total_s": round(time.monotonic() - started, 1)}
    del llm
    _cleanup()
    return result


def _cleanup() -> None:
    import torch
    from vllm.distributed import cleanup_dist_env_and_memory
    gc.collect()
    cleanup_dist_env_and_memory()
    torch.cuda.empty_cache()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    family_name, modes = JOBS[args.job]
    # A quantized model (tiny_models.QUANTIZED) runs as its family, with
    # the reference on its dequantized weights.
    family = family_of(family_name)
    model_dir = args.models / family_name
    ref_dir = reference_dir(args.models, family_name)
    what = (QUANTIZED[family_name].what if family_name in QUANTIZED else
            family.what)
    result = {"job": args.job, "family": family_name, "what": what,
              "modes": {}}
    try:
        refs = _references(family, ref_dir, {m.prompts for m in modes})
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised
        result["error"] = f"reference: {exc!r}"
        args.out.write_text(json.dumps(result, indent=1))
        raise
    for mode in modes:
        log(f"{args.job}: mode {mode.name} ...")
        try:
            result["modes"][mode.name] = run_mode(family, model_dir, mode,
                                                  refs)
        except Exception as exc:  # noqa: BLE001 - one mode's failure is a row
            result["modes"][mode.name] = {
                "summary": {"ok": False, "failures": [
                    f"{type(exc).__name__}: {str(exc)[:400]}"]},
                "traceback": traceback.format_exc()[-4000:]}
            traceback.print_exc()
            try:
                _cleanup()
            except Exception:  # noqa: BLE001
                pass
        log(f"{args.job}: mode {mode.name}: "
            f"{'ok' if result['modes'][mode.name]['summary']['ok'] else 'FAIL'}")
        args.out.write_text(json.dumps(result, indent=1))
    if "volta_paths" in sys.modules:
        result["paths"] = sys.modules["volta_paths"].snapshot()
    args.out.write_text(json.dumps(result, indent=1))
    return 0 if all(m["summary"]["ok"] for m in result["modes"].values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("VLLM_USE_V1", "0")
    sys.exit(main())
