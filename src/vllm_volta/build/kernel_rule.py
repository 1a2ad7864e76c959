"""May the upstream wheel's compiled kernels stand in for a build from source?

PyPI's vllm 0.9.2 wheel was compiled from the pristine 0.9.2 sources. Its
``_C``, ``_moe_C`` and ``cumem_allocator`` are the right kernels for a
patched tree only if no patch changed anything those three extensions are
built from. The rule, file by file (paths relative to the vLLM tree):

kernel inputs (any change refuses the upstream-kernels route)
  - ``csrc/**``: kernel and binding sources;
  - ``CMakeLists.txt`` and ``cmake/utils.cmake``: how they are compiled;
  - ``requirements/build.txt``: the torch they are compiled against;
  - ``pyproject.toml``, but only its ``[build-system]`` table (same reason);
  - ``setup.py``, except changes confined to the functions that only shape
    the version and the install requirements (``get_vllm_version``,
    ``get_requirements``), compared statement by statement with ``ast``.

not kernel inputs
  - ``cmake/external_projects/*.cmake``: FlashAttention and FlashMLA, which
    neither route ships (they need SM 8.0 / 9.0a); ``cmake/cpu_extension.cmake``
    and ``cmake/hipify.py`` (CPU and ROCm builds only);
  - everything else (``vllm/**``, tests, docs, other requirement files).

The route is judged on the tree itself, compared with the pristine files of
the pinned sdist, so an uncommitted edit counts as much as a patch; each
changed kernel input is then attributed to the series patches that touch it.
"""

from __future__ import annotations

import ast
import dataclasses
import tarfile
import tomllib
from pathlib import Path

KERNEL_PREFIXES = ("csrc/",)
KERNEL_FILES = ("CMakeLists.txt", "cmake/utils.cmake", "requirements/build.txt")
NOT_KERNEL = ("cmake/external_projects/", "cmake/cpu_extension.cmake", "cmake/hipify.py")
SETUP_PY_PACKAGING_ONLY = frozenset({"get_vllm_version", "get_requirements"})


@dataclasses.dataclass(frozen=True)
class Finding:
    path: str
    detail: str
    patches: tuple[str, ...]  # series patches that touch this path ("" when none does)

    def describe(self) -> str:
        who = ", ".join(self.patches) if self.patches else "a change in the tree that no series patch makes"
        return f"{self.path} ({self.detail}) changed by {who}"


def is_kernel_path(path: str) -> bool | None:
    """True/False by path alone; None when the content decides (setup.py, pyproject.toml)."""
    if path in ("setup.py", "pyproject.toml"):
        return None
    if any(path.startswith(p) or path == p for p in NOT_KERNEL):
        return False
    return path.startswith(KERNEL_PREFIXES) or path in KERNEL_FILES or path.startswith("cmake/")


def setup_py_kernel_changes(old: str, new: str) -> list[str]:
    """Top-level statements of setup.py that differ, other than the packaging-only functions."""
    def statements(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for i, node in enumerate(ast.parse(text).body):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                key = node.name
            else:
                key = f"statement {i + 1} ({type(node).__name__})"
            out[key] = ast.dump(node)
        return out
    before, after = statements(old), statements(new)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [k for k in changed if k not in SETUP_PY_PACKAGING_ONLY]


def pyproject_build_system_changed(old: str, new: str) -> bool:
    return tomllib.loads(old).get("build-system") != tomllib.loads(new).get("build-system")


def pristine_files(sdist: Path, paths: list[str]) -> dict[str, bytes | None]:
    """The given paths' bytes in the pinned sdist (None where the sdist lacks one)."""
    out: dict[str, bytes | None] = {p: None for p in paths}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if rel in out:
                fh = tar.extractfile(member)
                out[rel] = fh.read() if fh else None
    return out


def kernel_inputs(tree_files: list[str], sdist_names: list[str]) -> list[str]:
    """Every path that may matter: kernel inputs on either side, plus setup.py/pyproject.toml."""
    names = set(tree_files) | set(sdist_names)
    return sorted(n for n in names if is_kernel_path(n) is not False
                  and "__pycache__/" not in n and not n.endswith(".pyc"))


def sdist_names(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        return [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name]


def judge(tree: Path, tree_files: list[str], sdist: Path, patch_paths: dict[str, set[str]]) -> list[Finding]:
    """Changed kernel inputs of ``tree`` against the sdist; [] means upstream kernels fit.

    ``patch_paths`` maps each active series patch to the paths its diff touches.
    """
    candidates = kernel_inputs(tree_files, sdist_names(sdist))
    pristine = pristine_files(sdist, candidates)
    present = set(tree_files)
    findings = []
    for path in candidates:
        old = pristine.get(path)
        new = (tree / path).read_bytes() if path in present else None
        if old == new:
            continue
        if path == "setup.py" and old is not None and new is not None:
            changed = setup_py_kernel_changes(old.decode(), new.decode())
            if not changed:
                continue
            detail = "changes " + ", ".join(changed)
        elif path == "pyproject.toml" and old is not None and new is not None:
            if not pyproject_build_system_changed(old.decode(), new.decode()):
                continue
            detail = "changes [build-system]"
        else:
            detail = "added" if old is None else "removed" if new is None else "modified"
        who = tuple(sorted(name for name, paths in patch_paths.items() if path in paths))
        findings.append(Finding(path, detail, who))
    return findings
