"""Toolkit detection and refusals, with fake toolkit folders (an nvcc script each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_volta.build import toolchain

NVCC = """#!/bin/sh
echo "nvcc: NVIDIA (R) Cuda compiler driver"
echo "Cuda compilation tools, release {mm}, V{full}"
echo "Build cuda_{mm}.r{mm}/compiler.0_0"
"""


def fake_toolkit(root: Path, full: str) -> Path:
    mm = ".".join(full.split(".")[:2])
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(NVCC.format(mm=mm, full=full))
    nvcc.chmod(0o755)
    return root


def test_version_is_read_from_nvcc(tmp_path):
    tk = toolchain.inspect(fake_toolkit(tmp_path / "cuda-12.8", "12.8.93"), "test")
    assert str(tk.version) == "12.8.93" and tk.short == "12.8"


def test_cuda_13_is_refused_with_why_and_what_to_install(tmp_path):
    root = fake_toolkit(tmp_path / "cuda-13.0", "13.0.88")
    with pytest.raises(toolchain.ToolchainError) as err:
        toolchain.find(cuda_home=root, env={}, locations=())
    message = str(err.value)
    assert "compute_70" in message  # why
    assert "CUDA 12" in message and "12.8" in message and "CUDA_HOME" in message  # what to do


def test_cuda_11_is_refused(tmp_path):
    root = fake_toolkit(tmp_path / "cuda-11.8", "11.8.89")
    with pytest.raises(toolchain.ToolchainError, match="too old"):
        toolchain.find(cuda_home=root, env={}, locations=())


def test_cuda_home_is_taken_at_its_word(tmp_path):
    # A CUDA 13 CUDA_HOME is refused even though a CUDA 12 exists elsewhere:
    # quietly building with another toolkit than the one asked for would surprise.
    cuda13 = fake_toolkit(tmp_path / "cuda-13.0", "13.0.88")
    fake_toolkit(tmp_path / "cuda-12.8", "12.8.93")
    with pytest.raises(toolchain.ToolchainError, match="CUDA_HOME"):
        toolchain.find(env={"CUDA_HOME": str(cuda13)}, locations=(str(tmp_path / "cuda-*"),))


def test_search_skips_cuda_13_and_prefers_newest_12(tmp_path):
    fake_toolkit(tmp_path / "cuda-13.0", "13.0.88")
    fake_toolkit(tmp_path / "cuda-12.4", "12.4.131")
    fake_toolkit(tmp_path / "cuda-12.8", "12.8.93")
    tk, notes = toolchain.find(env={}, locations=(str(tmp_path / "cuda-*"),))
    assert tk is not None and str(tk.version) == "12.8.93" and tk.origin == "search"
    assert any("13.0.88" in n and "skipped" in n for n in notes)


def test_no_toolkit_at_all(tmp_path):
    tk, notes = toolchain.find(env={"PATH": str(tmp_path)}, locations=(str(tmp_path / "cuda-*"),))
    assert tk is None and notes == []


def test_only_cuda_13_means_none_with_a_note(tmp_path):
    fake_toolkit(tmp_path / "cuda-13.0", "13.0.88")
    tk, notes = toolchain.find(env={"PATH": str(tmp_path)}, locations=(str(tmp_path / "cuda-*"),))
    assert tk is None and len(notes) == 1 and "cannot target Volta" in notes[0]


def test_provisioned_toolkit_is_the_last_resort(tmp_path):
    fake_toolkit(tmp_path / "cuda-13.0", "13.0.88")
    prov = fake_toolkit(tmp_path / "cache" / "toolkit", "12.4.131")
    tk, _ = toolchain.find(env={"PATH": str(tmp_path)}, locations=(str(tmp_path / "cuda-*"),),
                           provisioned=prov)
    assert tk is not None and tk.origin == "provisioned" and tk.short == "12.4"


def test_cuda_home_without_nvcc_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(toolchain.ToolchainError, match="no bin/nvcc"):
        toolchain.find(env={"CUDA_HOME": str(tmp_path / "empty")}, locations=())
