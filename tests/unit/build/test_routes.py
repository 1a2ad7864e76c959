"""Route choice and up-front refusals (nothing is built here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_volta.build import kernel_rule, provision, routes, toolchain

from .test_kernel_rule import PRISTINE, _sdist, _tree

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def fake_sdist(tmp_path, monkeypatch):
    sdist = _sdist(tmp_path, PRISTINE)
    monkeypatch.setattr(routes.series_upstream, "fetch_sdist", lambda pin, progress=None: sdist)
    return sdist


def _choose(tree, files, route, patch_paths=None):
    req = routes.Request(root=ROOT, tree=tree, out=tree.parent / "dist", route=route)
    said: list[str] = []
    result = routes.choose(req, None, files, patch_paths or {}, said.append)
    return result, said


def test_auto_takes_upstream_kernels_for_a_python_only_tree(tmp_path, fake_sdist):
    tree, files = _tree(tmp_path, {"vllm/__init__.py": "# patched\n"})
    (route, findings), said = _choose(tree, files, "auto")
    assert route == "upstream-kernels" and findings == []
    assert "route: upstream-kernels" in said[0]


def test_auto_builds_from_source_when_kernels_changed_and_says_why(tmp_path, fake_sdist):
    tree, files = _tree(tmp_path, {"csrc/cache_kernels.cu": "changed"})
    (route, findings), said = _choose(tree, files, "auto", {"0004-cache.patch": {"csrc/cache_kernels.cu"}})
    assert route == "source" and findings[0].path == "csrc/cache_kernels.cu"
    assert "route: source" in said[0] and "0004-cache.patch" in said[0]


def test_upstream_kernels_refuses_and_names_the_patch(tmp_path, fake_sdist):
    tree, files = _tree(tmp_path, {"csrc/cache_kernels.cu": "changed"})
    with pytest.raises(routes.RouteRefused) as err:
        _choose(tree, files, "upstream-kernels", {"0004-cache.patch": {"csrc/cache_kernels.cu"}})
    assert "0004-cache.patch" in str(err.value) and "csrc/cache_kernels.cu" in str(err.value)


def test_explicit_routes_need_no_sdist(tmp_path, monkeypatch):
    monkeypatch.setattr(routes.series_upstream, "fetch_sdist", lambda *a, **k: pytest.fail("fetched"))
    tree, files = _tree(tmp_path, {})
    assert _choose(tree, files, "source")[0] == ("source", [])
    assert _choose(tree, files, "empty")[0] == ("empty", [])


def test_kernel_route_refuses_a_tree_without_the_version_patch(tmp_path):
    tree, _ = _tree(tmp_path, {})  # its setup.py knows no VLLM_VERSION_OVERRIDE
    req = routes.Request(root=ROOT, tree=tree, out=tmp_path / "dist", route="source", project_version="3")
    with pytest.raises(routes.RouteRefused, match="VLLM_VERSION_OVERRIDE"):
        routes.build(req, progress=lambda _: None)
    assert not (tmp_path / "dist").exists()


def test_no_toolkit_and_no_provision_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(toolchain, "find", lambda *a, **k: (None, ["CUDA 13.0.88 at /x: skipped"]))
    monkeypatch.setattr(provision, "provision", lambda *a, **k: pytest.fail("provisioned"))
    req = routes.Request(root=ROOT, tree=tmp_path, out=tmp_path, provision=False)
    said: list[str] = []
    with pytest.raises(toolchain.ToolchainError, match="no CUDA 12.x toolkit"):
        routes.find_toolkit(req, tmp_path, said.append)
    assert said == ["toolchain: CUDA 13.0.88 at /x: skipped"]


def test_kernel_rule_findings_describe_themselves():
    f = kernel_rule.Finding("CMakeLists.txt", "modified", ("0002-moe.patch",))
    assert f.describe() == "CMakeLists.txt (modified) changed by 0002-moe.patch"
