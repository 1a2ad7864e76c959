"""The harness itself on the CPU: job matrix, prompt sets, the path
recorder, the reference ops, the record, the driver without a GPU and the
test library's op list."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.engine import drive, jobs, prompts, record, rules
from tests.support.tiny_models import FAMILIES, QUANTIZED, family_of

SITE = Path(__file__).resolve().parents[1] / "support" / "volta_site"
OPS = Path(__file__).resolve().parents[1] / "support" / "vllm_ops"


def test_every_family_runs_eager_and_graph():
    for name in FAMILIES:
        family, modes = jobs.JOBS[name]
        assert family == name
        assert {m.name: m.engine["enforce_eager"] for m in modes} == {
            "eager": True, "graph": False}


def test_quantized_jobs_run_dense_and_moe_in_every_format():
    assert set(QUANTIZED) == {"llama-awq", "qwen2_moe-awq", "llama-w4a16",
                              "qwen2_moe-w4a16", "qwen2_moe-gptq",
                              "mixtral-gptq"}
    for name, spec in QUANTIZED.items():
        model, modes = jobs.JOBS[name]
        assert model == name and family_of(name).name == spec.family
        assert [m.name for m in modes] == ["eager", "graph", "batch16"]
        # batch16 takes the large-batch kernels (AWQ: dequantize + matmul)
        assert max(map(len, prompts.token_set(modes[2].prompts))) > 256
    assert {(q.family, q.scheme) for q in QUANTIZED.values()} == {
        ("llama", "awq"), ("qwen2_moe", "awq"), ("llama", "w4a16"),
        ("qwen2_moe", "w4a16"), ("qwen2_moe", "gptq"), ("mixtral", "gptq")}


def test_llama_modes_cover_the_issue():
    modes = {m.name: m for m in jobs.JOBS["llama-modes"][1]}
    assert modes["prefix-caching"].engine["enable_prefix_caching"]
    assert modes["prefix-caching"].rounds == 2
    assert modes["chunked-prefill"].engine["enable_chunked_prefill"]
    assert modes["preemption"].expect == "preempted"
    small = modes["preemption"].engine["num_gpu_blocks_override"] * 16
    assert small < sum(prompts.BATCH_LENGTHS)  # the batch cannot all fit
    long, long33k = jobs.JOBS["llama-long"][1]
    assert long.engine["max_model_len"] >= prompts.LONG_LENGTH + rules.STEPS
    need = prompts.LONG_33K_LENGTH + rules.STEPS
    assert long33k.engine["max_model_len"] >= need > 32768
    assert long33k.engine["num_gpu_blocks_override"] * 16 >= need
    assert long33k.engine["enable_chunked_prefill"]


def test_prompt_sets():
    batch = prompts.token_set("batch")
    assert len(batch) >= 16
    assert min(map(len, batch)) == 1 and max(map(len, batch)) == 2048
    assert len(prompts.token_set("long")[0]) > 8192
    assert len(prompts.token_set("long33k")[0]) > 32768
    prefix = prompts.token_set("prefix")
    assert all(p[:prompts.PREFIX_LENGTH] == prefix[0][:prompts.PREFIX_LENGTH]
               for p in prefix)
    assert prompts.token_set("base") == prompts.token_set("base")
    with pytest.raises(KeyError):
        prompts.token_set("nope")


@pytest.fixture
def site(monkeypatch):
    monkeypatch.syspath_prepend(str(SITE))
    yield
    for name in ("volta_paths", "volta_reference_ops"):
        sys.modules.pop(name, None)


def test_recorder_counts_op_calls(site, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import volta_paths

    monkeypatch.setattr(volta_paths, "_FILE", tmp_path / "1.json")
    ns = volta_paths._Namespace("aten", torch.ops.aten)
    out = ns.relu(torch.tensor([-1.0, 2.0]))
    ns.relu(out)
    assert out.tolist() == [0.0, 2.0]
    data = json.loads((tmp_path / "1.json").read_text())
    assert data["ops"]["aten.relu"] == 1   # written when first seen
    assert volta_paths.snapshot()["ops"]["aten.relu"] == 2
    assert not hasattr(ns, "no_such_op")


def test_reference_ops_answer_false_on_volta(site):
    pytest.importorskip("torch")
    import volta_reference_ops as ref

    for fn in (ref.supports_fp8, ref.supports_block_fp8,
               ref.group_gemm_supported, ref.sparse_supported):
        assert fn(70) is False
    assert len(ref.REFERENCE_OPS) == len(ref._IMPLS)


def test_record_marks_failures_and_the_forced_path(tmp_path):
    (tmp_path / "results").mkdir()
    ok = rules.summarise([rules.Verdict(True, 32, 32, None, 0.01)])
    bad = rules.summarise([rules.Verdict(False, 3, 32, False, 0.0, "parted")])
    (tmp_path / "results" / "llama.json").write_text(json.dumps({
        "modes": {"eager": {"summary": ok, "facts": {"dtype": "fp16"}},
                  "graph": {"summary": bad, "facts": {}}}}))
    text = record.render(tmp_path, {"forced": True, "gpu": "X"},
                         {"llama": 1, "qwen2": 1}, "cmd")
    assert "FORCED to 7.0" in text
    assert "| llama | eager | 32/32 |" in text and "| pass |" in text
    assert "parted" in text and "**FAIL**" in text
    assert "| qwen2 | (qwen2) |" in text   # no result is a failure row


def test_drive_without_a_gpu_skips_with_the_reason(tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.setattr(drive, "_machine", lambda: {"cuda": False})
    assert drive.main(["--out", str(tmp_path)]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out


def test_test_library_registers_what_build_lists():
    from tests.support.vllm_ops import build

    text = (OPS / "bindings.cpp").read_text()
    registered = set()
    for ns, body in re.findall(r"TORCH_LIBRARY_FRAGMENT\((\w+), \w+\) \{(.*?)\n\}",
                               text, re.S):
        registered |= {f"{ns}.{op}" for op in re.findall(r'impl\("(\w+)"', body)}
    assert registered == set(build.op_names())
    for source in build.SOURCES:
        assert not source.startswith("/")


def test_test_library_sources_exist_in_the_tree():
    import os

    from tests.support.vllm_ops import build

    tree = Path(os.environ.get("VLLM_VOLTA_TREE") or "upstream")
    if not tree.is_absolute():
        tree = Path(__file__).resolve().parents[2] / tree
    if not (tree / "csrc").is_dir():
        pytest.skip(f"no vLLM source tree with csrc/ at {tree}")
    missing = [s for s in build.SOURCES if not (tree / "csrc" / s).is_file()]
    assert not missing
