"""libgit2's tree merge with the rename settings a release move needs (pygit2 does not expose them).

``Repository.merge_trees`` leaves ``git_merge_options.target_limit`` (1000
rename candidates) and ``rename_threshold`` (50%) at libgit2's defaults.
Between vLLM releases more than 1000 files come and go, so inexact rename
detection is skipped, and libgit2's similarity score for a file that moved
and was rewritten runs a few points under git's (vllm/config.py ->
vllm/config/__init__.py onto 0.10.2: 49 for libgit2, 54 for git), so the
patches touching it read "missing target" where ``git cherry-pick`` merges.
This is pygit2's own merge_trees, through its own cffi binding, with those two
options set; the file merges use patience diff (git's merge-ort uses
histogram, which libgit2 lacks; with Myers, 0006 conflicted in config.py).
"""

from __future__ import annotations

import pygit2
from pygit2.enums import MergeFavor, MergeFileFlag, MergeFlag
from pygit2.errors import check_error
from pygit2.ffi import C, ffi

RENAME_LIMIT = 100_000
RENAME_THRESHOLD = 40
FILE_FLAGS = MergeFileFlag.DIFF_PATIENCE


def merge_trees(repo: pygit2.Repository, ancestor: pygit2.Tree, ours: pygit2.Tree, theirs: pygit2.Tree) -> pygit2.Index:
    """The 3-way merge of three trees of ``repo``, following renames past libgit2's defaults."""
    opts = repo._merge_options(MergeFavor.NORMAL, MergeFlag.FIND_RENAMES, FILE_FLAGS)
    opts.target_limit = RENAME_LIMIT
    opts.rename_threshold = RENAME_THRESHOLD
    trees = []
    for tree in (ancestor, ours, theirs):
        ptr = ffi.new("git_tree **")
        ffi.buffer(ptr)[:] = tree._pointer[:]
        trees.append(ptr)
    cindex = ffi.new("git_index **")
    check_error(C.git_merge_trees(cindex, repo._repo, trees[0][0], trees[1][0], trees[2][0], opts))
    return pygit2.Index.from_c(repo, cindex)
