"""The staging copy: only changed files are rewritten, so ninja rebuilds only those."""

from __future__ import annotations

import os
import subprocess

import pygit2

from vllm_volta.build import stage


def _write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_sync_copies_changes_only_and_keeps_mtimes(tmp_path):
    tree, dest = tmp_path / "tree", tmp_path / "stage"
    _write(tree, "csrc/a.cu", "a")
    _write(tree, "vllm/b.py", "b")
    _write(tree, "vllm/_C.abi3.so", "built")       # build output: never copied
    _write(tree, "build/temp/x.o", "obj")          # build dir: never copied
    first = stage.sync(tree, dest)
    assert (first.copied, first.unchanged) == (2, 0)
    assert not (dest / "vllm/_C.abi3.so").exists() and not (dest / "build").exists()
    old = 1_000_000_000
    os.utime(dest / "csrc/a.cu", (old, old))
    _write(tree, "vllm/b.py", "b2")                # a Python-only patch
    second = stage.sync(tree, dest)
    assert (second.copied, second.unchanged) == (1, 1)
    assert (dest / "csrc/a.cu").stat().st_mtime == old  # untouched: no recompile
    assert (dest / "vllm/b.py").read_text() == "b2"


def test_sync_removes_files_the_tree_dropped(tmp_path):
    tree, dest = tmp_path / "tree", tmp_path / "stage"
    _write(tree, "csrc/a.cu", "a")
    _write(tree, "csrc/gone.cu", "g")
    stage.sync(tree, dest)
    (tree / "csrc/gone.cu").unlink()
    assert stage.sync(tree, dest).removed == 1
    assert not (dest / "csrc/gone.cu").exists()


def test_git_tree_lists_tracked_and_untracked_not_ignored(tmp_path):
    tree = tmp_path / "tree"
    repo = pygit2.init_repository(str(tree))
    _write(tree, ".gitignore", "ignored.txt\n")
    _write(tree, "tracked.py", "t")
    _write(tree, "untracked.py", "u")
    _write(tree, "ignored.txt", "i")
    repo.index.add("tracked.py")
    repo.index.add(".gitignore")
    repo.index.write()
    assert stage.tree_files(tree) == [".gitignore", "tracked.py", "untracked.py"]


def test_stage_is_a_git_snapshot_of_exactly_the_tree_files(tmp_path):
    # setuptools-scm's file finder reads it: package data such as *.jinja is found.
    tree, dest = tmp_path / "tree", tmp_path / "stage"
    _write(tree, "vllm/templates/t.jinja", "{{ x }}")
    _write(tree, "vllm/__init__.py", "")
    stage.sync(tree, dest)
    (dest / "vllm/_version.py").write_text("v")    # written by setup.py later
    out = subprocess.run(["git", "-C", str(dest), "ls-files"], capture_output=True, text=True).stdout
    assert out.split() == ["vllm/__init__.py", "vllm/templates/t.jinja"]
    head = pygit2.Repository(str(dest)).head.target
    stage.sync(tree, dest)
    assert pygit2.Repository(str(dest)).head.target == head  # nothing changed: no new commit
