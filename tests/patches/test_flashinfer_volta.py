"""FlashInfer on Volta: no knob to add, nothing reaches it by default.

No patch. The strategy note advises `VLLM_USE_FLASHINFER_MOE_FP16=0`; that
variable does not exist in vLLM 0.9.2 (it came in later releases), so the
series invents no knob. FlashInfer is not a dependency of 0.9.2 (only the
upstream Docker image installs it, built for sm_75 and newer), and the
paths a V100 takes by default (V0 engine and worker, fused MoE, the
default attention backend, the sampler) never import it, even where it is
installed. These tests pin those facts: they pass on the pristine and the
patched tree alike, and fail if a later rebase or patch changes them.

Runs on CPU: the tree's vllm is imported with ``vllm._C`` stubbed and the
device is a CUDA platform class whose capability is mocked.
"""
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))

import vllm  # noqa: E402
import vllm.envs  # noqa: E402
from vllm.platforms.cuda import CudaPlatformBase  # noqa: E402
from vllm.platforms.interface import DeviceCapability  # noqa: E402

TREE = Path(vllm.__file__).resolve().parents[1]
KNOB = "VLLM_USE_FLASHINFER_MOE_FP16"


class FakeV100(CudaPlatformBase):

    @classmethod
    def get_device_capability(cls, device_id: int = 0):
        return DeviceCapability(major=7, minor=0)

    @classmethod
    def get_device_name(cls, device_id: int = 0) -> str:
        return "Tesla V100-SXM2-32GB"


@pytest.fixture(autouse=True)
def _no_flashinfer_requests(monkeypatch):
    for name in ("VLLM_ATTENTION_BACKEND", "VLLM_USE_FLASHINFER_SAMPLER",
                 KNOB):
        monkeypatch.delenv(name, raising=False)


def test_flashinfer_moe_knob_not_in_envs():
    assert KNOB not in vllm.envs.environment_variables
    with pytest.raises(AttributeError):
        getattr(vllm.envs, KNOB)


def test_no_flashinfer_moe_code_in_tree():
    hits = [
        str(path.relative_to(TREE))
        for path in (TREE / "vllm").rglob("*.py")
        if "FLASHINFER_MOE" in path.read_text(encoding="utf-8").upper()
    ]
    assert hits == []
    fused_moe = TREE / "vllm" / "model_executor" / "layers" / "fused_moe"
    assert not [
        path.name for path in fused_moe.rglob("*.py")
        if "flashinfer" in path.read_text(encoding="utf-8").lower()
    ]


def test_flashinfer_is_not_a_dependency():
    requirements = TREE / "requirements"
    if not requirements.is_dir():
        pytest.skip(f"{TREE} has no requirements/ folder")
    files = [*requirements.glob("*.txt"), TREE / "pyproject.toml"]
    assert [f.name for f in files
            if "flashinfer" in f.read_text(encoding="utf-8").lower()] == []


@pytest.mark.parametrize("use_v1", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_default_attention_backend_on_volta_is_not_flashinfer(use_v1, dtype):
    backend = FakeV100.get_attn_backend_cls(None, 128, dtype, "auto", 16,
                                            use_v1, False)
    assert backend and "flashinfer" not in backend.lower()


def test_sampler_flashinfer_off_unless_asked():
    assert vllm.envs.VLLM_USE_FLASHINFER_SAMPLER is None


# Run in a fresh interpreter: a finder answers for `flashinfer` as if it
# were installed, and records any import of it, while the V100 default
# path is imported. The modules are imported on the CPU runner's own
# platform (with a CUDA platform some run CUDA ops at import, which the
# stubbed vllm._C lacks); no flashinfer import in the 0.9.2 tree depends
# on the platform at import time. The attention backend is the one the
# V100 platform picks.
_PROBE = textwrap.dedent("""
    import importlib, importlib.abc, importlib.machinery, json, sys, types
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    reached = []

    class Loader(importlib.abc.Loader):
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            reached.append(module.__name__)
            raise ImportError("flashinfer reached: " + module.__name__)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "flashinfer":
                return importlib.machinery.ModuleSpec(name, Loader(),
                                                      is_package=True)
            return None

    sys.meta_path.insert(0, Finder())

    from vllm.platforms.cuda import CudaPlatformBase
    from vllm.platforms.interface import DeviceCapability

    class V100(CudaPlatformBase):
        @classmethod
        def get_device_capability(cls, device_id=0):
            return DeviceCapability(7, 0)
        @classmethod
        def get_device_name(cls, device_id=0):
            return "Tesla V100-SXM2-32GB"

    import torch
    failed = {}
    modules = sys.argv[1:]
    backend = V100.get_attn_backend_cls(None, 128, torch.float16, "auto",
                                        16, False, False)
    modules.append(backend.rsplit(".", 1)[0])
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = repr(e)
    print(json.dumps({"reached": reached, "failed": failed,
                      "backend": backend}))
""")

VOLTA_DEFAULT_PATH = [
    "vllm.engine.llm_engine",
    "vllm.worker.worker",
    "vllm.worker.model_runner",
    "vllm.model_executor.layers.sampler",
    "vllm.model_executor.layers.fused_moe.fused_moe",
    "vllm.model_executor.models.llama",
    "vllm.model_executor.models.qwen2",
    "vllm.model_executor.models.mixtral",
    "vllm.model_executor.models.deepseek_v2",
]


def test_volta_default_path_never_imports_flashinfer():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(TREE), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", _PROBE, *VOLTA_DEFAULT_PATH],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["reached"] == [], result
    # Only a missing optional package may stop an import here (xformers,
    # the stock default backend on Volta, is not installed on CPU runners).
    for name, error in result["failed"].items():
        assert "flashinfer" not in error, (name, error)
        assert name == result["backend"].rsplit(".", 1)[0], (name, error)
