"""setup.py must take the wheel's whole version from VLLM_VERSION_OVERRIDE.

vllm-volta labels its wheels ``0.9.2+volta.N``. Unpatched, setup.py appends
``+cuXYZ`` (or ``.cuXYZ`` after an existing local label) whenever nvcc is not
CUDA 12.8, so a CUDA 12.4 build of ``0.9.2+volta.3`` would come out as
``0.9.2+volta.3.cu124``. The patch makes ``VLLM_VERSION_OVERRIDE`` win
verbatim and keeps ``vllm/_version.py`` in step with it.

``get_vllm_version`` is taken out of the tree's setup.py with ``ast`` and run
with stand-ins for torch, nvcc and setuptools-scm: no build happens.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.version import Version



def _load_get_vllm_version(tree: Path, nvcc: str, written: list):
    source = (tree / "setup.py").read_text()
    module = ast.parse(source)
    func = next(node for node in module.body
                if isinstance(node, ast.FunctionDef)
                and node.name == "get_vllm_version")

    def fake_get_version(write_to=None, **_):
        # setuptools-scm honours SETUPTOOLS_SCM_PRETEND_VERSION like this.
        version = os.environ.get("SETUPTOOLS_SCM_PRETEND_VERSION", "0.9.2")
        written.append((write_to, version))
        return version

    namespace = {
        "os": os,
        "sys": SimpleNamespace(argv=["setup.py", "bdist_wheel"]),
        "get_version": fake_get_version,
        "envs": SimpleNamespace(VLLM_TARGET_DEVICE="cuda",
                                VLLM_USE_PRECOMPILED=False),
        "MAIN_CUDA_VERSION": "12.8",
        "get_nvcc_cuda_version": lambda: Version(nvcc),
        "_no_device": lambda: False,
        "_is_cuda": lambda: True,
    }
    exec(compile(ast.Module(body=[func], type_ignores=[]), "setup.py",
                 "exec"), namespace)
    return namespace["get_vllm_version"]


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("SETUPTOOLS_SCM_PRETEND_VERSION", raising=False)
    monkeypatch.delenv("VLLM_VERSION_OVERRIDE", raising=False)
    return monkeypatch


def test_override_is_taken_verbatim_on_cuda_12_4(vllm_tree, clean_env):
    written: list = []
    get_vllm_version = _load_get_vllm_version(vllm_tree, "12.4", written)
    clean_env.setenv("VLLM_VERSION_OVERRIDE", "0.9.2+volta.3.dev2.g1a2b3c4")
    assert get_vllm_version() == "0.9.2+volta.3.dev2.g1a2b3c4"
    # vllm/_version.py (what vllm.__version__ reports) gets the same version.
    assert written == [("vllm/_version.py", "0.9.2+volta.3.dev2.g1a2b3c4")]


def test_without_override_upstream_suffix_is_kept(vllm_tree, clean_env):
    # Guard: builds that do not ask for an override behave as upstream.
    get_vllm_version = _load_get_vllm_version(vllm_tree, "12.4", [])
    assert get_vllm_version() == "0.9.2+cu124"
