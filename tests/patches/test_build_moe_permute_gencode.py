"""Every ``set_gencode_flags_for_srcs`` call in CMakeLists.txt names defined
variables.

vLLM 0.9.2 calls it for the moe_permute_unpermute sources with
``${MARLIN_PERMUTE_SRC}`` and ``${MOE_PERMUTE_ARCHS}``, neither of which is
ever set, so those two files get no ``-gencode`` flag at all and nvcc builds
them for its default (sm_52 + compute_52 PTX) instead of the target
architectures: on a V100 they only run after a JIT compile of that PTX.
The patch passes ``${MOE_PERMUTE_SRC}`` and ``${CUDA_ARCHS}``.

The test reads the CMake text: it needs neither CMake nor CUDA.
"""

from __future__ import annotations

import re
from pathlib import Path


CALL = re.compile(r"set_gencode_flags_for_srcs\s*\((.*?)\)", re.S)
ARG_VAR = re.compile(r"\b(SRCS|CUDA_ARCHS)\s+\"?\$\{(\w+)\}\"?")
# Commands whose first argument is a variable they set.
SETTERS = re.compile(
    r"\b(?:set|cuda_archs_loose_intersection)\s*\(\s*(\w+)"
    r"|\blist\s*\(\s*APPEND\s+(\w+)"
    r"|\bfile\s*\(\s*GLOB\s+(\w+)", re.I)



def _cmake_text(tree: Path) -> str:
    files = [tree / "CMakeLists.txt", *sorted((tree / "cmake").rglob("*.cmake"))]
    return "\n".join(f.read_text() for f in files)


def test_gencode_calls_use_defined_variables(vllm_tree):
    tree = vllm_tree
    text = _cmake_text(tree)
    defined = {name for match in SETTERS.finditer(text)
               for name in match.groups() if name}
    calls = CALL.findall((tree / "CMakeLists.txt").read_text())
    assert calls, "no set_gencode_flags_for_srcs call found"
    undefined = sorted({f"{arg} ${{{var}}}" for call in calls
                        for arg, var in ARG_VAR.findall(call)
                        if var not in defined})
    assert undefined == [], (
        "set_gencode_flags_for_srcs gets variables that are never set "
        f"(those sources get no -gencode): {undefined}")
