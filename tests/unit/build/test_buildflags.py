"""The source route's environment for setup.py."""

from __future__ import annotations

from pathlib import Path

from vllm_volta.build import buildflags


def test_source_env(tmp_path):
    base = {"PATH": "/usr/bin", "VLLM_USE_PRECOMPILED": "1", "CUDA_PATH": "/usr/local/cuda-13.0"}
    env = buildflags.source_env(base=base, toolkit=tmp_path / "tk", python_bin=tmp_path / "venv/bin",
                                stage=tmp_path / "stage/src", cache=tmp_path, cutlass_dir=tmp_path / "cutlass",
                                version="0.9.2+volta.3", jobs=2)
    assert env["TORCH_CUDA_ARCH_LIST"] == "7.0"
    assert env["PATH"].split(":")[0] == str(tmp_path / "tk" / "bin")
    assert env["CUDA_HOME"] == str(tmp_path / "tk")
    assert env["VLLM_CUTLASS_SRC_DIR"] == str(tmp_path / "cutlass")
    assert env["VLLM_VERSION_OVERRIDE"] == env["SETUPTOOLS_SCM_PRETEND_VERSION"] == "0.9.2+volta.3"
    assert env["CMAKE_BUILD_TYPE"] == "Release" and env["NVCC_THREADS"] == "1" and env["MAX_JOBS"] == "2"
    assert "VLLM_USE_PRECOMPILED" not in env and "CUDA_PATH" not in env


def test_prefix_maps_end_with_the_stage(tmp_path):
    maps = buildflags.prefix_maps(tmp_path / "stage", tmp_path / "cache", {tmp_path / "tk": "cuda"})
    assert maps[-1] == f"-ffile-prefix-map={tmp_path / 'stage'}=vllm"  # GCC: last match wins
    assert f"-ffile-prefix-map={Path.home()}=~" in maps
