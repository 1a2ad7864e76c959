"""NCCL settings on Volta: NCCL_CUMEM_ENABLE=0 and NCCL_PROTO=simple.

Patch: "platforms: default NCCL_PROTO to simple on compute capability 7.x"
(Tier: critical).

NCCL_CUMEM_ENABLE=0 is already vLLM 0.9.2's default (vllm/env_override.py,
run on `import vllm`); those tests pass on both trees ("upstream
behaviour"). NCCL_PROTO is never set by vLLM 0.9.2: the series makes
`simple` the default on CUDA compute capability 7.x, in the engine process
when the VllmConfig is made (CudaPlatformBase.check_and_update_config),
before any worker exists. Local workers inherit it; Ray workers get it
copied (additional_env_vars). A value the user set is kept.

Runs on CPU: the tree's vllm is imported with ``vllm._C`` stubbed and the
device is a CUDA platform class whose capability is mocked.
"""
import importlib
import logging
import os
import subprocess
import sys
import types

import pytest

sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))

import vllm.config  # noqa: E402
import vllm.env_override  # noqa: E402
import vllm.logger  # noqa: E402
import vllm.platforms  # noqa: E402
from vllm.platforms.cuda import CudaPlatformBase  # noqa: E402

from .fakes import fake_cuda  # noqa: E402
from vllm.platforms.interface import DeviceCapability  # noqa: E402

IMEX_CHANNELS = "/dev/nvidia-caps-imex-channels"


def make_vllm_config(monkeypatch, platform) -> "vllm.config.VllmConfig":
    """Build a VllmConfig the way the engine does, on the given platform:
    its __post_init__ calls the platform's check_and_update_config."""
    monkeypatch.setattr(vllm.platforms, "_current_platform", platform)
    monkeypatch.setattr(vllm.config, "current_platform", platform)
    return vllm.config.VllmConfig()


@pytest.fixture(autouse=True)
def _no_user_nccl_proto(monkeypatch):
    # monkeypatch restores the variable (or its absence) after each test.
    monkeypatch.delenv("NCCL_PROTO", raising=False)


# --- NCCL_CUMEM_ENABLE: upstream behaviour ----------------------------------


@pytest.mark.skipif(os.path.exists(IMEX_CHANNELS),
                    reason="multi-node NVLink host: vLLM keeps cuMem on")
def test_cumem_disabled_on_import(monkeypatch):
    """Upstream behaviour (passes on both trees)."""
    monkeypatch.delenv("NCCL_CUMEM_ENABLE", raising=False)
    importlib.reload(vllm.env_override)
    assert os.environ["NCCL_CUMEM_ENABLE"] == "0"


def test_users_cumem_setting_kept(monkeypatch):
    """Upstream behaviour (passes on both trees)."""
    monkeypatch.setenv("NCCL_CUMEM_ENABLE", "1")
    importlib.reload(vllm.env_override)
    assert os.environ["NCCL_CUMEM_ENABLE"] == "1"


# --- NCCL_PROTO: the patch ---------------------------------------------------


@pytest.mark.parametrize("capability", [(7, 0), (7, 5)])
def test_nccl_proto_simple_by_default_on_7x(monkeypatch, capability):
    make_vllm_config(monkeypatch, fake_cuda(*capability, "Tesla V100"))
    assert os.environ.get("NCCL_PROTO", "").lower() == "simple"


def test_nccl_proto_default_logged_once(monkeypatch, cuda_log):
    platform = fake_cuda(7, 0, "Tesla V100-SXM2-32GB")
    make_vllm_config(monkeypatch, platform)
    # The engine may build more configs; the variable is then already set.
    monkeypatch.delenv("NCCL_PROTO")
    make_vllm_config(monkeypatch, platform)
    lines = [r for r in cuda_log if "NCCL_PROTO" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in cuda_log]
    assert "7.0" in lines[0].getMessage()


def test_nccl_proto_reaches_local_workers(monkeypatch):
    """Worker processes (multiprocessing executor) inherit the engine
    process's environment."""
    make_vllm_config(monkeypatch, fake_cuda(7, 0, "Tesla V100"))
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ['NCCL_PROTO'])"],
        capture_output=True, text=True, check=True)
    assert child.stdout.strip().lower() == "simple"


def test_nccl_proto_copied_to_ray_workers():
    """The Ray executor copies a platform's additional_env_vars from the
    engine process to every worker."""
    assert "NCCL_PROTO" in fake_cuda(7, 0, "Tesla V100").additional_env_vars


def test_users_nccl_proto_kept_on_volta(monkeypatch):
    """Guard for the patch (passes on both trees)."""
    monkeypatch.setenv("NCCL_PROTO", "LL128")
    make_vllm_config(monkeypatch, fake_cuda(7, 0, "Tesla V100"))
    assert os.environ["NCCL_PROTO"] == "LL128"


def test_nccl_proto_untouched_on_ampere(monkeypatch):
    """Guard for the patch (passes on both trees)."""
    make_vllm_config(monkeypatch, fake_cuda(8, 0, "NVIDIA A100-SXM4-80GB"))
    assert "NCCL_PROTO" not in os.environ
