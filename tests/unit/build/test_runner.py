"""Progress from ninja's [n/N] lines, elapsed time, and failures with the log's tail."""

from __future__ import annotations

import sys

import pytest

from vllm_volta.build import runner

SCRIPT = """
import sys
print("-- Configuring done")
print("[1/3] Building CXX object CMakeFiles/cumem_allocator.dir/csrc/cumem_allocator.cpp.o")
print("[2/3] Building CUDA object CMakeFiles/_C.dir/csrc/cache_kernels.cu.o")
print("[3/3] Linking CXX shared module _C.abi3.so")
sys.exit(int(sys.argv[1]))
"""


def test_progress_lines(tmp_path):
    lines: list[str] = []
    result = runner.run([sys.executable, "-c", SCRIPT, "0"], cwd=tmp_path, env={}, log=tmp_path / "b.log",
                        progress=lines.append)
    assert result["steps"] == 3 and result["total"] == 3
    assert lines[0].startswith("[1/3] ") and lines[0].endswith("cumem_allocator: csrc/cumem_allocator.cpp")
    assert lines[1].endswith("_C: csrc/cache_kernels.cu")
    assert "Configuring done" in (tmp_path / "b.log").read_text()


def test_failure_names_the_log_and_shows_its_tail(tmp_path):
    with pytest.raises(runner.BuildFailed) as err:
        runner.run([sys.executable, "-c", SCRIPT, "3"], cwd=tmp_path, env={}, log=tmp_path / "b.log",
                   progress=lambda _: None)
    assert "exit 3" in str(err.value) and str(tmp_path / "b.log") in str(err.value)
    assert "[3/3] Linking" in str(err.value)


def test_elapsed_format():
    assert runner.fmt_elapsed(59) == "59s" and runner.fmt_elapsed(38 * 60 + 5) == "38m05s"
