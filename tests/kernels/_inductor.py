"""The Triton kernels Inductor generates for a V100, made on a machine with no GPU.

vLLM wraps a few functions in ``torch.compile`` even on the V0 engine
(GemmaRMSNorm, ``grouped_topk``, ``get_masked_input_and_mask``, the
rejection sampler's ``_multinomial``, Command-R's ``layer_norm_func``...).
On a GPU, Inductor turns each into Triton kernels the first time it runs,
and the Triton that ships with torch compiles them for the GPU at hand. This
module does the same ahead of time for compute capability 7.0:

1. ``fake_v100()`` makes torch's CUDA queries, Inductor's device interface
   and fake tensors report a Tesla V100 (80 SMs, capability 7.0, no
   bfloat16) and makes Triton target ``cuda:70`` (``_aot.AotDriver``);
2. ``generate()`` traces a function on fake CUDA tensors (``make_fx``; the
   shapes that are dynamic are symbolic, as ``dynamic=True`` makes them) and
   runs Inductor's ``compile_fx`` on the graph, keeping the source of every
   Triton kernel it emits instead of compiling it in the background;
3. ``compile_sm70()`` loads each source as Inductor does and compiles every
   launch configuration with Inductor's own ``_precompile_config``: the
   options, constants and target a V100 would get.

What this cannot show is run time: nothing is launched. It needs the torch
and Triton a V100 host runs (torch 2.7.0 and Triton 3.3.0, vLLM 0.9.2's
pin): Inductor's code generation is torch's, so tests/install runs it in
the venv that holds the installed wheel.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

# A Tesla V100-SXM2-32GB as torch.cuda.get_device_properties reports it.
V100 = dict(name="Tesla V100-SXM2-32GB", major=7, minor=0,
            multi_processor_count=80, total_memory=32 * 2**30,
            warp_size=32, max_threads_per_multi_processor=2048,
            regs_per_multiprocessor=65536, L2_cache_size=6 * 2**20,
            gcnArchName="", is_integrated=False, uuid="volta-aot")

@dataclasses.dataclass
class Launch:
    """One launch configuration of one generated kernel, compiled."""
    kernel: str
    config: dict
    num_warps: int
    arch: Optional[int] = None
    shared: Optional[int] = None
    registers: Optional[int] = None
    spill: Optional[int] = None
    error: str = ""


@dataclasses.dataclass
class Generated:
    """A Triton kernel Inductor wrote: its name and source."""
    name: str
    source: str

    @property
    def uses_dot(self) -> bool:
        return "tl.dot(" in self.source


_faked = False


def fake_v100(capability: int = 70) -> None:
    """Make torch, Inductor and Triton in this process see one V100.

    Inductor's pattern passes are initialised on the CPU first: they trace
    their patterns on a real tensor of the device torch says is available."""
    global _faked
    if _faked:
        return
    import torch
    import torch._subclasses.fake_tensor as fake_tensor
    import torch.utils._triton as torch_triton
    import triton
    from torch._dynamo.device_interface import CudaInterface
    from torch._inductor.fx_passes import joint_graph, post_grad

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.kernels import _aot

    import torch._inductor.config as inductor_config
    inductor_config.force_disable_caches = True
    inductor_config.compile_threads = 1  # no compile workers: they query the GPU
    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        joint_graph.lazy_init()
        post_grad.lazy_init()
    finally:
        torch.cuda.is_available = available

    props = types.SimpleNamespace(**{**V100, "major": capability // 10,
                                     "minor": capability % 10})
    cuda = torch.cuda
    cuda.is_available = lambda: True
    cuda.device_count = lambda: 1
    cuda.current_device = lambda: 0
    cuda.set_device = lambda device: None
    cuda.get_device_properties = lambda device=None: props
    cuda.get_device_capability = lambda device=None: (props.major, props.minor)
    cuda.get_device_name = lambda device=None: props.name
    cuda.is_bf16_supported = lambda including_emulation=True: False
    cuda._lazy_init = lambda: None
    cuda.get_rng_state = lambda device="cuda": torch.zeros(16, dtype=torch.uint8)
    cuda.set_rng_state = lambda state, device="cuda": None
    cuda.device.__enter__ = lambda self: None
    cuda.device.__exit__ = lambda self, *exc: False
    for name, value in (
            ("current_device", lambda: 0),
            ("set_device", lambda device: None),
            ("device_count", lambda: 1),
            ("get_device_properties", lambda device=None: props),
            ("synchronize", lambda device=None: None),
            ("exchange_device", lambda device: 0),
            ("maybe_exchange_device", lambda device: 0),
            ("is_bf16_supported", lambda including_emulation=False: False),
            ("get_raw_stream", lambda device: 0)):
        setattr(CudaInterface, name, staticmethod(value))
    CudaInterface.Worker.current_device = staticmethod(lambda: 0)
    CudaInterface.Worker.get_device_properties = staticmethod(
        lambda device=None: props)
    # A fake CUDA tensor would otherwise initialise the real driver.
    fake_tensor.init_gpu_context = lambda device: None
    _route_guarded_bindings()
    # Constant folding evaluates constant subgraphs on real tensors of the
    # device (a CUDA scalar for masked_fill's value): off here, so such a
    # constant stays an op that Inductor lowers into the same kernel.
    inductor_config.joint_graph_constant_folding = False
    # A traced function may call another torch.compile'd one (Phi-3-small's
    # gegelu calls quick_gelu): trace through it into the same graph.
    torch._dynamo.config.error_on_nested_fx_trace = False
    for name in ("has_triton", "has_triton_package"):
        getattr(getattr(torch_triton, name), "cache_clear", lambda: None)()
    triton.runtime.driver.set_active(_aot.AotDriver(capability))
    _faked = True


class Inputs:
    """Fake CUDA tensors for one trace, sharing one shape environment."""

    def __init__(self) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv
        self.mode = FakeTensorMode(shape_env=ShapeEnv())

    def tensor(self, shape: Iterable[int], dtype, dynamic: Iterable[int] = ()):
        """A tensor on cuda:0; the dims listed in ``dynamic`` are symbolic."""
        import torch
        from torch.fx.experimental.symbolic_shapes import (
            DimDynamic, StatelessSymbolicContext)
        shape = tuple(shape)
        dynamic = set(dynamic)
        context = StatelessSymbolicContext(dynamic_sizes=[
            DimDynamic.DYNAMIC if i in dynamic else DimDynamic.STATIC
            for i in range(len(shape))])
        meta = torch.empty(shape, dtype=dtype, device="meta")
        fake = self.mode.from_tensor(meta, symbolic_context=context)
        fake.fake_device = torch.device("cuda", 0)
        return fake


def _index(x, index):
    """Basic indexing (ints, slices, None, Ellipsis) as the aten ops the
    indexing binding records."""
    import torch
    aten = torch.ops.aten
    items = list(index) if isinstance(index, tuple) else [index]
    if any(not isinstance(i, (int, slice, type(None), type(Ellipsis)))
           for i in items):
        raise NotImplementedError(
            f"index {index!r}: only ints, slices, None and ... are traced "
            "on the faked V100")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        items[at:at + 1] = [slice(None)] * (x.dim() - used)
    dim = 0
    for item in items:
        if item is None:
            x = aten.unsqueeze.default(x, dim)
            dim += 1
        elif isinstance(item, int):
            x = aten.select.int(x, dim, item)
        else:
            if item != slice(None):
                x = aten.slice.Tensor(x, dim, item.start, item.stop,
                                      item.step or 1)
            dim += 1
    return x


def _route_guarded_bindings() -> None:
    """A few of torch's Python bindings (``~x``, ``x[...]``, ``x.copy_``)
    put a C++ device guard around the op they call; a guard on a CUDA
    tensor asks the CUDA runtime for the current device, which fails with
    no GPU. In this process those methods call the aten ops the bindings
    call, which record the same graph and take no guard (torch's own
    decompositions use them too, e.g. every in-place reference copies its
    result out with ``copy_``)."""
    import torch
    aten = torch.ops.aten
    getitem = torch.Tensor.__getitem__

    def index(x, key):
        try:
            return _index(x, key)
        except NotImplementedError:
            return getitem(x, key)

    torch.Tensor.__invert__ = lambda x: aten.bitwise_not.default(x)
    torch.Tensor.__getitem__ = index
    torch.Tensor.copy_ = lambda x, src, non_blocking=False: \
        aten.copy_.default(x, src, non_blocking)


def generate(fn: Callable, args: tuple) -> list[Generated]:
    """The Triton kernels Inductor emits for ``fn(*args)``; ``args`` are
    tensors from one ``Inputs`` (other arguments are bound into ``fn``)."""
    import torch._inductor.async_compile as async_compile
    from torch._inductor.compile_fx import compile_fx
    from torch.fx.experimental.proxy_tensor import make_fx

    emitted: dict[str, Generated] = {}
    original = async_compile.AsyncCompile.triton

    def keep(self, kernel_name, source_code, device_str="cuda"):
        emitted.setdefault(kernel_name, Generated(kernel_name, source_code))

    async_compile.AsyncCompile.triton = keep
    try:
        names = [f"a{i}" for i in range(len(args))]
        wrapper = eval(f"lambda {', '.join(names)}: fn({', '.join(names)})",
                       {"fn": fn})
        graph = make_fx(wrapper, tracing_mode="symbolic")(*args)
        compile_fx(graph, list(args))
    finally:
        async_compile.AsyncCompile.triton = original
    return list(emitted.values())


def _load(kernel: Generated, directory: Path) -> Any:
    """Import the kernel's source from a file, as Inductor's code cache
    does (Triton reads the function's source lines)."""
    path = directory / f"{kernel.name}.py"
    path.write_text(kernel.source)
    spec = importlib.util.spec_from_file_location(kernel.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, kernel.name)


def compile_sm70(kernel: Generated, directory: Path) -> list[Launch]:
    """Compile every launch configuration of a generated kernel for the
    faked device with Inductor's own precompile step."""
    from torch._inductor.runtime import triton_helpers

    from tests.kernels import _aot

    # The generated module selects the GPU driver; the stand-in stays.
    triton_helpers.set_driver_to_gpu = lambda: None
    try:
        autotuner = _load(kernel, directory)
    except Exception as exc:  # noqa: BLE001 - reported per kernel
        return [Launch(kernel.name, {}, 0, error=_aot.short_error(exc))]
    launches = []
    for config in autotuner.configs:
        launch = Launch(kernel.name, dict(config.kwargs), config.num_warps)
        try:
            with _aot.quiet_stderr() as errors:
                try:
                    result = autotuner._precompile_config(config)
                except Exception as exc:
                    raise RuntimeError(
                        "; ".join(errors[:3]) or _aot.short_error(exc)) from exc
            binary = result.kernel
            launch.arch = int(binary.metadata.target.arch)
            launch.shared = int(binary.metadata.shared)
            compiled = _aot.Compiled(kernel.name, binary, {})
            launch.registers, launch.spill = _aot.registers(compiled)
        except Exception as exc:  # noqa: BLE001 - reported per launch
            launch.error = _aot.short_error(exc)
        launches.append(launch)
    return launches
