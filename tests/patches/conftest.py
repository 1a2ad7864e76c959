"""Patch tests run against one vLLM tree: the patched upstream/ by default.

VLLM_VOLTA_TREE names another tree (a pristine one shows that each test
fails without its patch). The tree is put first on sys.path, and vllm._C is
stubbed where the tree has no compiled extension (CPU-level tests).
"""

import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREE = Path(os.environ.get("VLLM_VOLTA_TREE") or ROOT / "upstream")
if not TREE.is_absolute():
    TREE = (ROOT / TREE).resolve()

if not (TREE / "vllm" / "__init__.py").exists():
    raise pytest.UsageError(
        f"tests/patches needs a vLLM tree at {TREE}: run `nox -s apply` first, "
        "or set VLLM_VOLTA_TREE to a vLLM source directory"
    )

if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))
# Subprocesses vLLM starts (e.g. ModelConfig's model inspection) must see the same tree.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(TREE), os.environ.get("PYTHONPATH", "")) if p
)
os.environ.setdefault("VLLM_TARGET_DEVICE", "cuda")
if not list((TREE / "vllm").glob("_C*.so")):
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))


@pytest.fixture(scope="session")
def vllm_tree() -> Path:
    return TREE


@pytest.fixture
def cuda_log():
    """Records of the vllm.platforms.cuda logger, its *_once memory wiped before and after."""
    import logging

    import vllm.logger

    def forget():
        vllm.logger._print_info_once.cache_clear()
        vllm.logger._print_warning_once.cache_clear()

    forget()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    log = logging.getLogger("vllm.platforms.cuda")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)
    forget()


@pytest.fixture
def gpu(monkeypatch):
    """gpu(major, name): vLLM sees one CUDA GPU of capability (major, 0)."""
    from .moe_quant import use_gpu
    return lambda major, name: use_gpu(monkeypatch, major, name)


@pytest.fixture
def capability(monkeypatch):
    """capability(major, minor): vLLM's current_platform is a CUDA device of
    that compute capability (named "GPU")."""
    import vllm.platforms
    from vllm.platforms.interface import DeviceCapability, PlatformEnum

    platform_cls = type(vllm.platforms.current_platform)

    def set_capability(major: int, minor: int) -> None:
        cap = DeviceCapability(major, minor)
        monkeypatch.setattr(platform_cls, "_enum", PlatformEnum.CUDA)
        monkeypatch.setattr(platform_cls, "get_device_capability",
                            classmethod(lambda cls, device_id=0: cap))
        monkeypatch.setattr(platform_cls, "get_device_name",
                            classmethod(lambda cls, device_id=0: "GPU"))

    return set_capability
