"""Build smoke tests for CI: real tools, no full vLLM build.

- a real CUDA 12 nvcc (found, or provisioned into the cache from Debian's
  CUDA 12.4 packages: about 100 s and 1.7 GB of downloads the first time)
  compiles a small extension for sm_70; the wheel verification finds its
  sm_70 cubin, and fails a build for sm_75 only, an RPATH, or a build-host
  path left in the object;
- CUDA 13 is refused, and the reason is real: its nvcc rejects compute_70;
- the empty route builds a verified wheel of the real tree;
- the upstream-kernels route refuses a tree whose kernel sources changed.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from vllm_volta.build import buildflags, provenance, provision, routes, toolchain, verify

from tests.unit.build.wheels import make_wheel

ROOT = Path(__file__).resolve().parents[2]
V = "0.9.2+volta.0.test"
pytestmark = pytest.mark.integration

KERNEL = r"""
#include <cstdio>
#include <cuda_runtime.h>
__global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }
extern "C" int launch(float* x) {
  scale<<<1, 32>>>(x, 2.f);
  if (cudaGetLastError() != cudaSuccess) {
    // Like TORCH_CHECK: __FILE__ ends up in the object.
    std::printf("launch failed at %s:%d\n", __FILE__, __LINE__);
    return 1;
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def toolkit() -> toolchain.Toolkit:
    cache = routes.cache_root()
    tk, _ = toolchain.find(provisioned=provision.toolkit_dir(cache))
    if tk is None:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            pytest.skip("no CUDA 12 toolkit and no apt-get/dpkg-deb to provision one")
        tk = toolchain.inspect(provision.provision(cache, print), "provisioned")
    return tk


def _nvcc(tk: toolchain.Toolkit, src_dir: Path, out: Path, arch: str, *extra: str) -> bytes:
    src = src_dir / "csrc" / "scale.cu"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(KERNEL)
    subprocess.run([str(tk.nvcc), "-shared", "-Xcompiler=-fPIC", "-O2",
                    "-gencode", f"arch=compute_{arch},code=sm_{arch}", *extra,
                    str(src), "-o", str(out)], check=True, cwd=src_dir)
    return out.read_bytes()


def _maps(stage: Path) -> list[str]:
    return [f"-Xcompiler={m}" for m in buildflags.prefix_maps(stage, routes.cache_root())]


def _verify(tmp_path: Path, c_so: bytes, host_prefixes: list[str]) -> verify.Report:
    files = {"vllm/_C.abi3.so": c_so, "vllm/_moe_C.abi3.so": c_so,
             "vllm/cumem_allocator.abi3.so": c_so}
    wheel = make_wheel(tmp_path, V, files, route="source")
    tk, _ = toolchain.find(provisioned=provision.toolkit_dir(routes.cache_root()))
    return verify.verify_wheel(wheel, version=V, route="source", cuobjdump=tk.cuobjdump,
                               host_prefixes=host_prefixes)


def test_sm70_extension_passes_and_report_lists_its_archs(toolkit, tmp_path):
    stage = tmp_path / "stage"
    so = _nvcc(toolkit, stage, tmp_path / "scale.so", "70", *_maps(stage))
    report = _verify(tmp_path, so, [str(stage) + "/", str(routes.cache_root()) + "/"])
    assert report.ok, report.problems
    c = next(e for e in report.extensions if e.name == "vllm/_C.abi3.so")
    # nvcc -shared links cudart_static's own sm_70 image beside ours.
    assert set(c.cubins) == {"sm_70"} and c.cubins["sm_70"] >= 1 and c.device_code
    assert c.archs().startswith("sm_70 x")


def test_sm75_only_extension_fails(toolkit, tmp_path):
    stage = tmp_path / "stage"
    so = _nvcc(toolkit, stage, tmp_path / "scale.so", "75", *_maps(stage))
    report = _verify(tmp_path, so, [str(stage) + "/"])
    assert "vllm/_C.abi3.so sm_70" in [n for n, ok, _ in report.checks if not ok]
    assert report.extensions[0].archs().startswith("sm_75 x")


def test_build_host_path_is_caught_without_prefix_maps(toolkit, tmp_path):
    stage = tmp_path / "stage"
    so = _nvcc(toolkit, stage, tmp_path / "scale.so", "70")
    report = _verify(tmp_path, so, [str(stage) + "/"])
    failed = [n for n, ok, _ in report.checks if not ok]
    assert "vllm/_C.abi3.so host paths" in failed


def test_rpath_is_caught(toolkit, tmp_path):
    stage = tmp_path / "stage"
    so = _nvcc(toolkit, stage, tmp_path / "scale.so", "70", *_maps(stage),
               "-Xlinker=-rpath=/opt/build-host/lib")
    report = _verify(tmp_path, so, [str(stage) + "/"])
    assert "vllm/_C.abi3.so RPATH/RUNPATH" in [n for n, ok, _ in report.checks if not ok]


def test_cuda_13_is_refused_because_it_cannot_target_compute_70(tmp_path):
    cuda13 = next((Path(p) for p in sorted(Path("/usr/local").glob("cuda-13*"))
                   if (Path(p) / "bin" / "nvcc").exists()), None)
    if cuda13 is None:
        pytest.skip("no CUDA 13 toolkit on this machine (the refusal itself is unit-tested)")
    with pytest.raises(toolchain.ToolchainError, match="compute_70"):
        toolchain.find(cuda_home=cuda13)
    src = tmp_path / "k.cu"
    src.write_text("__global__ void k() {}\n")
    proc = subprocess.run([str(cuda13 / "bin" / "nvcc"), "-c", "-gencode", "arch=compute_70,code=sm_70",
                           str(src), "-o", str(tmp_path / "k.o")], capture_output=True, text=True)
    assert proc.returncode != 0 and "compute_70" in proc.stderr


def _tree() -> Path:
    import os
    tree = Path(os.environ.get("VLLM_VOLTA_TREE") or ROOT / "upstream")
    tree = tree if tree.is_absolute() else ROOT / tree
    if not (tree / "setup.py").exists():
        pytest.skip(f"no vLLM tree at {tree}: run `nox -s apply` first")
    return tree


def test_empty_route_builds_a_verified_wheel(tmp_path):
    out = tmp_path / "dist"
    result = routes.build(routes.Request(root=ROOT, tree=_tree(), out=out, route="empty",
                                         project_version="3", log_dir=tmp_path),
                          progress=lambda _: None)
    assert result.wheel.name == "vllm-0.9.2+volta.3.empty-py3-none-any.whl"
    assert result.report.ok and (out / (result.wheel.name + ".sha256")).exists()
    record = provenance.read_wheel(result.wheel)
    assert record["kernel_route"] == "empty" and record["upstream"]["tag"] == "v0.9.2"
    with zipfile.ZipFile(result.wheel) as zf:
        names = zf.namelist()
    # Package data that only setuptools-scm's git file finder brings along.
    assert any(n.endswith(".jinja") for n in names)
    assert not any(n.endswith(".so") for n in names)
    # Only the verified wheel and its .sha256: the temporary build folder is gone.
    assert sorted(p.name for p in out.iterdir()) == [result.wheel.name, result.wheel.name + ".sha256"]


@pytest.mark.parametrize("project,says_dev", [("3", False), ("3.1.dev2+g1a2b3c4", True)])
def test_untagged_build_says_it_made_a_dev_label(tmp_path, project, says_dev):
    said = []
    result = routes.build(routes.Request(root=ROOT, tree=_tree(), out=tmp_path / "dist", route="empty",
                                         project_version=project, log_dir=tmp_path),
                          progress=said.append)
    notes = [line for line in said if line.startswith("note:") and "development label" in line]
    assert bool(notes) == says_dev, said[:3]
    if says_dev:
        assert result.wheel.name.startswith("vllm-0.9.2+volta.3.1.dev2.g1a2b3c4.empty-")
        assert "git tag vN" in notes[0]


def test_upstream_kernels_route_refuses_a_changed_kernel_source(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(_tree(), tree, ignore=shutil.ignore_patterns(".git", "build", "__pycache__", "*.so"))
    kernel = tree / "csrc" / "cache_kernels.cu"
    kernel.write_text(kernel.read_text() + "\n// a local change\n")
    with pytest.raises(routes.RouteRefused) as err:
        routes.build(routes.Request(root=ROOT, tree=tree, out=tmp_path / "dist", route="upstream-kernels",
                                    project_version="3"), progress=lambda _: None)
    assert "csrc/cache_kernels.cu" in str(err.value) and "--route source" in str(err.value)
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").glob("*.whl"))
