"""Ahead-of-time Triton compilation for a GPU this machine does not have.

Triton ships its own ptxas, so a kernel can be compiled for any CUDA
target on a machine with no GPU. This module makes Triton and vLLM believe
a CUDA device of a chosen compute capability is present, then turns every
kernel launch (``kernel[grid](...)``) into a compile-only warm-up. Driving
vLLM's own host code (its config functions and ``invoke_*`` wrappers) this
way compiles exactly the kernels, constexprs and launch options that code
would launch on that device; meta tensors stand in for real ones, so real
model shapes cost no memory.

Use ``install()`` before the first ``import vllm``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Iterator, Optional

# Volta (sm_70) allows 96 KiB of shared memory per thread block.
VOLTA_MAX_SHARED = 98304

_installed = False


def tree() -> Path:
    """The vLLM source tree under test (env VLLM_VOLTA_TREE)."""
    value = os.environ.get("VLLM_VOLTA_TREE")
    if not value:
        raise RuntimeError(
            "VLLM_VOLTA_TREE is not set: point it at a vLLM 0.9.2 source "
            "tree, e.g. VLLM_VOLTA_TREE=upstream")
    path = Path(value).resolve()
    if not (path / "vllm" / "__init__.py").is_file():
        raise RuntimeError(f"VLLM_VOLTA_TREE={value}: no vllm/__init__.py "
                           "there; it must be a vLLM source tree")
    return path


class AotDriver:
    """A stand-in Triton driver: it reports a CUDA target and launches
    nothing. Each capability gets its own device id, so Triton's per-device
    binders and kernel caches never mix targets."""

    def __init__(self, capability: int = 70) -> None:
        from triton.backends.compiler import GPUTarget
        self.capability = capability
        self.target = GPUTarget("cuda", capability, 32)

    @staticmethod
    def is_active() -> bool:
        return True

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return self.capability

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self):
        import torch
        return torch.device("meta")

    def get_device_interface(self):
        import torch
        return torch.cuda

    def get_benchmarker(self):
        raise RuntimeError("AotDriver cannot benchmark: there is no GPU")

    def get_empty_cache_for_benchmark(self):
        raise RuntimeError("AotDriver cannot benchmark: there is no GPU")

    def clear_cache(self, cache) -> None:
        pass


@dataclasses.dataclass
class Compiled:
    """One kernel compiled by a captured launch."""
    name: str
    kernel: Any  # triton.compiler.CompiledKernel
    constexprs: dict

    @property
    def shared(self) -> int:
        return int(self.kernel.metadata.shared)

    @property
    def num_warps(self) -> int:
        return int(self.kernel.metadata.num_warps)

    @property
    def num_stages(self) -> int:
        return int(self.kernel.metadata.num_stages)

    @property
    def target(self) -> int:
        return int(self.kernel.metadata.target.arch)


def prepare_tree() -> Path:
    """Put the tree under test first on sys.path and stub vLLM's compiled
    extension (the kernels tested here are Triton or plain torch; vLLM
    imports ``vllm._C`` at module level in places)."""
    src = tree()
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    return src


def has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def install(capability: int = 70) -> None:
    """Make Triton target cuda:<capability> on a machine without a GPU.

    Must run before vllm is imported: vllm.triton_utils decides at import
    whether Triton is usable, from whether a Triton driver is active."""
    global _installed
    prepare_tree()
    if _installed:
        set_target(capability)
        return
    if "vllm.triton_utils" in sys.modules:
        from vllm.triton_utils import HAS_TRITON
        if not HAS_TRITON:
            raise RuntimeError(
                "vllm was imported with Triton disabled before "
                "_aot.install(); run the kernel tests in their own pytest "
                "process (tests/kernels/conftest.py installs it first)")
    import triton  # noqa: F401
    from triton.backends import backends
    backends["nvidia"].driver.is_active = staticmethod(lambda: True)
    set_target(capability)
    _installed = True


@contextlib.contextmanager
def quiet_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file inside the block (a
    failing Triton pass dumps its whole MLIR module there); the yielded
    list receives the ``error:`` lines afterwards."""
    errors: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield errors
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            errors.extend(line.strip() for line in text.splitlines()
                          if "error:" in line or "note: Pipeline" in line)


def set_target(capability: int) -> None:
    import triton
    triton.runtime.driver.set_active(AotDriver(capability))


@contextlib.contextmanager
def target(capability: int) -> Iterator[None]:
    """Compile for another capability inside the block."""
    import triton
    previous = triton.runtime.driver.active
    set_target(capability)
    try:
        yield
    finally:
        triton.runtime.driver.set_active(previous)


@contextlib.contextmanager
def capture() -> Iterator[list[Compiled]]:
    """Within the block, every Triton launch compiles and does not run;
    the compiled kernels are appended to the yielded list (identical
    specialisations come from Triton's in-process cache, compiled once)."""
    from triton.runtime.jit import JITFunction
    original = JITFunction.run
    seen: list[Compiled] = []

    def run(self, *args, grid, warmup, **kwargs):
        kernel = original(self, *args, grid=grid, warmup=True, **kwargs)
        constexprs = {
            k: v
            for k, v in kwargs.items()
            if k not in ("num_warps", "num_stages", "num_ctas")
            and not hasattr(v, "data_ptr")
        }
        constexprs["num_warps"] = kwargs.get("num_warps")
        constexprs["num_stages"] = kwargs.get("num_stages")
        seen.append(Compiled(self.fn.__name__, kernel, constexprs))
        return kernel

    JITFunction.run = run
    try:
        yield seen
    finally:
        JITFunction.run = original


@contextlib.contextmanager
def capability(major: int, minor: int) -> Iterator[None]:
    """Make vLLM's current_platform report a CUDA device of this
    capability (is_cuda, get_device_capability, has/is_device_capability)."""
    from vllm.platforms import current_platform
    from vllm.platforms.interface import DeviceCapability, PlatformEnum
    cap = DeviceCapability(major, minor)
    cls = type(current_platform)
    saved = {
        name: cls.__dict__.get(name)
        for name in ("_enum", "is_cuda", "is_cuda_alike",
                     "get_device_capability", "get_device_name")
    }
    cls._enum = PlatformEnum.CUDA
    cls.is_cuda = lambda self=None: True
    cls.is_cuda_alike = lambda self=None: True
    cls.get_device_capability = classmethod(lambda c, device_id=0: cap)
    cls.get_device_name = classmethod(
        lambda c, device_id=0: "Tesla V100-SXM2-32GB"
        if cap.major == 7 else f"AOT sm_{major}{minor}")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                delattr(cls, name)
            else:
                setattr(cls, name, value)


def meta(*shape: int, dtype=None):
    """A meta tensor (shape and dtype, no storage; data_ptr() is 0, which
    Triton sees as 16-byte aligned like any real CUDA allocation)."""
    import torch
    return torch.empty(shape, dtype=dtype or torch.float16, device="meta")


def tool(name: str) -> str:
    import triton
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: this Triton wheel ships no "
                           f"{name}")
    return str(path)


_RESOURCE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def registers(compiled: Compiled) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of the cubin, read
    with the cuobjdump that Triton ships. A stack above 0 means spills."""
    cubin = compiled.kernel.asm["cubin"]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool("cuobjdump"), "--dump-resource-usage",
                              f.name],
                             check=True,
                             capture_output=True,
                             text=True).stdout
    match = _RESOURCE.search(out)
    if match is None:
        raise RuntimeError(f"no resource line in cuobjdump output:\n{out}")
    return int(match.group(1)), int(match.group(2))


def sass(compiled: Compiled) -> str:
    """The cubin's machine code (no line info), for comparing builds."""
    cubin = compiled.kernel.asm["cubin"]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool("cuobjdump"), "--dump-sass", f.name],
                              check=True,
                              capture_output=True,
                              text=True).stdout


def short_error(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def first(items: list, default: Optional[Any] = None):
    return items[0] if items else default
