"""A build for SM 7.0 only must not fetch FlashAttention or FlashMLA.

vLLM's CMake fetches vllm-flash-attn and FlashMLA from GitHub even when no
target architecture can use them. The patch makes both external projects
return early (with empty targets for setup.py) when nothing would be built.

The test configures a tiny CMake project that includes the tree's
``cmake/utils.cmake`` and the two ``cmake/external_projects/*.cmake`` files,
with a stand-in ``FetchContent`` module (first on ``CMAKE_MODULE_PATH``) whose
``FetchContent_Declare``/``FetchContent_MakeAvailable`` only record their
arguments, so no network and no CUDA are needed.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

FETCHCONTENT_STANDIN = """
# Stand-in for CMake's FetchContent module: records, never downloads.
macro(FetchContent_Declare NAME)
  set_property(GLOBAL APPEND PROPERTY PROBE_DECLARED "${NAME}")
endmacro()
macro(FetchContent_MakeAvailable)
  set_property(GLOBAL APPEND PROPERTY PROBE_FETCHED "${ARGN}")
endmacro()
"""

HARNESS = """
cmake_minimum_required(VERSION 3.18)
project(volta_fetch_probe LANGUAGES NONE)
list(PREPEND CMAKE_MODULE_PATH "${{CMAKE_CURRENT_SOURCE_DIR}}/modules")
include("{tree}/cmake/utils.cmake")
set(VLLM_GPU_LANG "CUDA")
set(CMAKE_CUDA_COMPILER_VERSION "{cuda}")
set(CUDA_ARCHS "{archs}")
set(FETCHCONTENT_BASE_DIR "${{CMAKE_BINARY_DIR}}/deps")
include("{tree}/cmake/external_projects/flashmla.cmake")
include("{tree}/cmake/external_projects/vllm_flash_attn.cmake")
get_property(_fetched GLOBAL PROPERTY PROBE_FETCHED)
foreach(_t _flashmla_C _vllm_fa2_C _vllm_fa3_C)
  if(TARGET ${{_t}})
    list(APPEND _targets ${{_t}})
  endif()
endforeach()
message(STATUS "PROBE fetched=[${{_fetched}}] targets=[${{_targets}}]")
"""



def _probe(tree: Path, tmp_path: Path, archs: str, cuda: str = "12.4") -> tuple[list, list]:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake not found: install requirements/build.txt")
    src = tmp_path / "probe"
    (src / "modules").mkdir(parents=True)
    (src / "modules" / "FetchContent.cmake").write_text(FETCHCONTENT_STANDIN)
    (src / "CMakeLists.txt").write_text(
        textwrap.dedent(HARNESS.format(tree=tree, archs=archs, cuda=cuda)))
    proc = subprocess.run([cmake, "-S", str(src), "-B", str(src / "b")],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    line = next((ln for ln in out.splitlines() if "PROBE fetched=" in ln),
                None)
    assert line is not None, f"probe did not finish:\n{out}"
    fetched = line.split("fetched=[")[1].split("]")[0]
    targets = line.split("targets=[")[1].split("]")[0]
    return ([f for f in fetched.split(";") if f],
            [t for t in targets.split(";") if t])


def test_sm70_only_build_fetches_nothing(vllm_tree, tmp_path):
    fetched, targets = _probe(vllm_tree, tmp_path, "7.0")
    assert fetched == [], f"fetched {fetched} for a SM 7.0-only build"
    # setup.py asks for these targets by name; they must exist (empty).
    assert sorted(targets) == ["_flashmla_C", "_vllm_fa2_C", "_vllm_fa3_C"]


def test_ampere_build_still_fetches_flash_attention(vllm_tree, tmp_path):
    # Guard against skipping too much: SM 8.0 needs FlashAttention 2.
    fetched, _ = _probe(vllm_tree, tmp_path, "7.0;8.0")
    assert "vllm-flash-attn" in fetched
