"""A stable copy of the vLLM tree for the build to run in.

The build never writes into the tree it was given (``upstream/`` stays a
clean git checkout). Instead the tree's files are synchronised into a staging
folder in the cache that survives between builds: a file is copied only when
its bytes changed, so unchanged sources keep their modification times and
CMake/ninja rebuild only what a patch touched. The staging folder also holds
the CMake build directory, so a rebuild after a Python-only change compiles
nothing.

The staging folder is also a git repository holding one snapshot commit of
exactly the tree's files: vLLM's packaging relies on setuptools-scm's file
finder (git) for the package data that setup.py does not list, such as the
chat templates (``*.jinja``), as it does in upstream's own git checkout.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
import shutil
from pathlib import Path

import pygit2

MANIFEST = ".volta-stage-files"
# Build outputs and caches that are never copied from a tree.
SKIP_DIRS = {".git", "build", "dist", ".deps", "__pycache__", ".eggs", ".nox", ".venv"}
SKIP_FILES = {"vllm/_version.py"}
SKIP_SUFFIXES = (".so", ".pyc", ".whl")


@dataclasses.dataclass
class SyncResult:
    copied: int = 0
    unchanged: int = 0
    removed: int = 0


def tree_files(tree: Path) -> list[str]:
    """Relative paths of the tree's source files (git's view when it is a checkout)."""
    tree = Path(tree)
    if (tree / ".git").exists():
        repo = pygit2.Repository(str(tree))
        names = [entry.path for entry in repo.index]
        names += [path for path, flags in repo.status().items() if flags & pygit2.GIT_STATUS_WT_NEW]
    else:
        names = []
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            rel = Path(dirpath).relative_to(tree)
            names += [str(rel / f) if str(rel) != "." else f for f in filenames]
    keep = []
    for name in names:
        parts = name.split("/")
        if any(p in SKIP_DIRS or p.endswith(".egg-info") for p in parts[:-1]):
            continue
        if name in SKIP_FILES or name.endswith(SKIP_SUFFIXES):
            continue
        path = tree / name
        if path.is_file():
            keep.append(name)
    return sorted(set(keep))


def sync(tree: Path, dest: Path) -> SyncResult:
    tree, dest = Path(tree), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    names = tree_files(tree)
    result = SyncResult()
    for name in names:
        src, dst = tree / name, dest / name
        if dst.is_file() and not dst.is_symlink() and src.stat().st_size == dst.stat().st_size \
                and filecmp.cmp(src, dst, shallow=False):
            result.unchanged += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        shutil.copyfile(src, dst)  # a fresh mtime: ninja sees the change
        shutil.copymode(src, dst)
        result.copied += 1
    manifest = dest / MANIFEST
    previous = set(manifest.read_text().splitlines()) if manifest.exists() else set()
    for name in sorted(previous - set(names)):
        path = dest / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            result.removed += 1
    manifest.write_text("\n".join(names) + "\n")
    snapshot(dest, names)
    return result


SIGNATURE = pygit2.Signature("vllm-volta build", "vllm-volta@invalid", 0, 0)


def snapshot(dest: Path, names: list[str]) -> str:
    """Commit exactly ``names`` in the staging folder's own repository."""
    git_dir = dest / ".git"
    repo = pygit2.Repository(str(dest)) if git_dir.exists() else pygit2.init_repository(str(dest))
    index = repo.index
    index.clear()
    for name in names:
        index.add(name)
    index.write()
    tree_id = index.write_tree()
    parents = [] if repo.head_is_unborn else [repo.head.target]
    if parents and repo[parents[0]].tree_id == tree_id:
        return str(parents[0])
    return str(repo.create_commit("HEAD", SIGNATURE, SIGNATURE, "vllm-volta staging snapshot",
                                  tree_id, parents))
