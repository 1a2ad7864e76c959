"""When may upstream's compiled kernels stand in for a source build?"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from vllm_volta.build import kernel_rule

SETUP_PY = '''\
import os

MAIN_CUDA_VERSION = "12.8"


def get_vllm_version() -> str:
    return "0.9.2"


def get_requirements() -> list[str]:
    return ["torch==2.7.0"]


class cmake_build_ext:
    def configure(self):
        return ["-DCMAKE_BUILD_TYPE=Release"]


ext_modules = ["vllm._C"]
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools", "torch == 2.7.0"]

[project]
name = "vllm"
'''


@pytest.mark.parametrize("path, expected", [
    ("csrc/attention/paged_attention_v1.cu", True),
    ("csrc/torch_bindings.cpp", True),
    ("CMakeLists.txt", True),
    ("cmake/utils.cmake", True),
    ("requirements/build.txt", True),
    ("cmake/external_projects/flashmla.cmake", False),
    ("cmake/external_projects/vllm_flash_attn.cmake", False),
    ("cmake/cpu_extension.cmake", False),
    ("vllm/platforms/cuda.py", False),
    ("requirements/cuda.txt", False),
    ("setup.py", None),
    ("pyproject.toml", None),
])
def test_is_kernel_path(path, expected):
    assert kernel_rule.is_kernel_path(path) is expected


def test_setup_py_version_and_requirements_changes_are_packaging_only():
    new = SETUP_PY.replace('return "0.9.2"', 'return os.environ.get("V", "0.9.2")')
    new = new.replace('["torch==2.7.0"]', '["torch==2.7.0", "xformers"]')
    assert kernel_rule.setup_py_kernel_changes(SETUP_PY, new) == []


def test_setup_py_build_changes_count():
    new = SETUP_PY.replace("Release", "Debug")
    assert kernel_rule.setup_py_kernel_changes(SETUP_PY, new) == ["cmake_build_ext"]
    new = SETUP_PY.replace('["vllm._C"]', '["vllm._C", "vllm._moe_C"]')
    assert kernel_rule.setup_py_kernel_changes(SETUP_PY, new) == ["statement 6 (Assign)"]


def test_setup_py_comment_only_change_is_no_change():
    assert kernel_rule.setup_py_kernel_changes(SETUP_PY, "# note\n" + SETUP_PY) == []


def test_pyproject_only_build_system_matters():
    assert not kernel_rule.pyproject_build_system_changed(PYPROJECT, PYPROJECT.replace('"vllm"', '"vllm2"'))
    assert kernel_rule.pyproject_build_system_changed(PYPROJECT, PYPROJECT.replace("2.7.0", "2.8.0"))


def _sdist(tmp_path: Path, files: dict[str, str]) -> Path:
    path = tmp_path / "vllm-0.9.2.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"vllm-0.9.2/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


PRISTINE = {
    "setup.py": SETUP_PY,
    "pyproject.toml": PYPROJECT,
    "CMakeLists.txt": "project(vllm)\n",
    "cmake/external_projects/flashmla.cmake": "FetchContent_Declare(flashmla)\n",
    "csrc/cache_kernels.cu": "__global__ void k() {}\n",
    "csrc/__pycache__/gen.cpython-311.pyc": "bytecode",
    "vllm/__init__.py": "",
    "PKG-INFO": "Name: vllm\n",
}


def _tree(tmp_path: Path, changes: dict[str, str | None]) -> tuple[Path, list[str]]:
    tree = tmp_path / "tree"
    files = {k: v for k, v in PRISTINE.items() if "__pycache__" not in k and k != "PKG-INFO"}
    files.update(changes)
    for name, text in files.items():
        if text is None:
            continue
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    return tree, sorted(n for n, t in files.items() if t is not None)


def test_pristine_kernels_with_python_and_packaging_patches_are_allowed(tmp_path):
    sdist = _sdist(tmp_path, PRISTINE)
    tree, files = _tree(tmp_path, {
        "vllm/__init__.py": "# patched\n",
        "setup.py": SETUP_PY.replace('return "0.9.2"', 'return "0.9.2+volta.1"'),
        "cmake/external_projects/flashmla.cmake": "return()\n",
    })
    assert kernel_rule.judge(tree, files, sdist, {}) == []


def test_kernel_change_is_refused_and_attributed_to_its_patch(tmp_path):
    sdist = _sdist(tmp_path, PRISTINE)
    tree, files = _tree(tmp_path, {"csrc/cache_kernels.cu": "__global__ void k2() {}\n",
                                   "CMakeLists.txt": "project(vllm)\n# local edit\n"})
    findings = kernel_rule.judge(tree, files, sdist, {
        "0003-cache-fix.patch": {"csrc/cache_kernels.cu"},
        "0001-python-only.patch": {"vllm/__init__.py"},
    })
    assert [(f.path, f.patches) for f in findings] == [
        ("CMakeLists.txt", ()),
        ("csrc/cache_kernels.cu", ("0003-cache-fix.patch",)),
    ]
    assert "0003-cache-fix.patch" in findings[1].describe()
    assert "no series patch" in findings[0].describe()


def test_added_and_removed_kernel_files_count(tmp_path):
    sdist = _sdist(tmp_path, PRISTINE)
    tree, files = _tree(tmp_path, {"csrc/cache_kernels.cu": None, "csrc/new.cu": "x"})
    assert {(f.path, f.detail) for f in kernel_rule.judge(tree, files, sdist, {})} == {
        ("csrc/cache_kernels.cu", "removed"), ("csrc/new.cu", "added")}


def test_setup_py_build_change_is_refused(tmp_path):
    sdist = _sdist(tmp_path, PRISTINE)
    tree, files = _tree(tmp_path, {"setup.py": SETUP_PY.replace("Release", "Debug")})
    (finding,) = kernel_rule.judge(tree, files, sdist, {"0002-x.patch": {"setup.py"}})
    assert finding.path == "setup.py" and "cmake_build_ext" in finding.detail
