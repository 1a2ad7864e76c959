"""benchmarks/bench_moe.py: its plumbing on CPU (--dry) and its arithmetic.

The GPU figures come from the lent GPU; here the script runs end to end
with tiny shapes (tensor-core column only: no Triton kernel runs on CPU)
and writes its Markdown, and the roofline projection and threshold
helpers are checked on numbers worked out by hand.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_moe.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_moe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_moe"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _tree() -> Path:
    tree = Path(os.environ.get("VLLM_VOLTA_TREE") or ROOT / "upstream")
    return tree if tree.is_absolute() else ROOT / tree


def test_dry_run_writes_tables(tmp_path):
    tree = _tree()
    if not (tree / "vllm" / "__init__.py").is_file():
        pytest.skip(f"no vLLM tree at {tree} (nox -s apply)")
    md = tmp_path / "moe.md"
    env = dict(os.environ, VLLM_VOLTA_TREE=str(tree), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry", "--markdown", str(md)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = md.read_text()
    assert "projection" in text
    for shape in _bench().DRY_SHAPES:
        assert f"### {shape.name}" in text
    # Every batch size has a row, with a tensor-core time and TFLOP/s.
    rows = [line.split(" | ") for line in text.splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(_bench().DRY_SHAPES) * len(_bench().DRY_BATCHES)
    for row in rows:
        assert row[3] != "-" and float(row[3].replace(",", "")) > 0
        assert row[8] in ("triton", "tensor cores")
    # The tree's threshold decides the path the 7.0 tree picks.
    source = (_tree() / "vllm/model_executor/layers/fused_moe/fused_moe.py"
              ).read_text()
    (threshold, ) = re.findall(r"^VOLTA_MOE_TC_MIN_TOKENS = (\d+)$", source,
                               re.MULTILINE)
    assert f"VOLTA_MOE_TC_MIN_TOKENS = {threshold}" in text


def test_projection_keeps_the_fraction_of_roofline():
    b = _bench()
    flops, nbytes = 2e12, 1e9
    # Compute-bound on both GPUs for the fp32-dot path.
    roof_h = flops / b.H200.fp32_fma
    t = 2 * roof_h  # half of the H200 roofline reached
    v100 = b.projection(b.H200, "triton fp32-dot", flops, nbytes, t)
    assert v100 == pytest.approx(2 * flops / b.V100.fp32_fma)
    # Memory-bound on the V100, compute-bound on the H200 (tensor cores).
    flops = 1e11
    roof_h = max(nbytes / b.H200.bandwidth, flops / b.H200.fp16_tensor)
    v100 = b.projection(b.H200, "tensor cores", flops, nbytes, 4 * roof_h)
    assert v100 == pytest.approx(4 * nbytes / b.V100.bandwidth)
    assert b.projection(b.H200, "sm_90 (upstream)", flops, nbytes, 1) is None
    assert b.projection(None, "tensor cores", flops, nbytes, 1) is None


def test_threshold_is_where_the_fast_path_stays_ahead():
    b = _bench()
    rows = [{"M": m, "slow": s, "fast": f}
            for m, s, f in [(1, 1, 2), (64, 2, 1), (128, 2, 3), (256, 4, 2),
                            (512, 8, 2)]]
    got = b.threshold(rows, lambda r: r["slow"], lambda r: r["fast"])
    assert got == 256
    assert b.threshold(rows[:3], lambda r: r["slow"],
                       lambda r: r["fast"]) is None


def test_decode_table_rows():
    b = _bench()
    tiles = [f"{m}x{n}x{k}" for m, n in b.DECODE_MN for k in b.DECODE_K]
    times = {t: 1e-4 * (i + 2) for i, t in enumerate(tiles)}
    times["16x64x64"] = 1e-5
    row = {"M": 8, "t_picked": 2e-4, "t": times,
           "picked": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32,
                      "BLOCK_SIZE_K": 64},
           "diff": {t: 0.0 for t in tiles}}
    (cells, ) = b.decode_rows([row])
    assert len(cells) == len(b.decode_columns())
    assert cells[:3] == [8, "16x32x64", "200"]
    assert cells[-2:] == ["16x64x64", "0.00e+00"]
