"""The work tree and index of upstream/, moved step by step so that any step can be redone.

libgit2's checkout writes the index at its end and compares against HEAD:
killed half-way, it leaves files that the next checkout takes for the
user's. :func:`switch` instead writes each file that differs from the
target (an interruption point each), removes the files of the trees it
leaves that the target lacks, and writes the index last. Run again after
an interruption, it finishes the job: it depends on the target and the
trees left only, not on what the interrupted run managed to do.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Iterable

import pygit2
from pygit2.enums import FileMode, FileStatus

from . import faults
from .upstream import Progress


def dirty_paths(repo: pygit2.Repository) -> list[str]:
    """Paths with uncommitted edits (untracked files that are not ignored count)."""
    return sorted(
        path
        for path, flags in repo.status().items()
        if flags != FileStatus.CURRENT and not flags & FileStatus.IGNORED
    )


def clear_stale_lock(repo: pygit2.Repository, progress: Progress = print) -> None:
    """Remove an index.lock left by a killed run (call with the checkout lock held)."""
    lock = Path(repo.path) / "index.lock"
    if lock.exists():
        faults.point("remove stale index.lock")
        lock.unlink(missing_ok=True)
        progress(f"removed {lock}, left by an interrupted run")


def blobs(tree: pygit2.Tree, prefix: str = "") -> dict[str, tuple[pygit2.Oid, int]]:
    """path -> (blob id, file mode) for every file of ``tree``."""
    out: dict[str, tuple[pygit2.Oid, int]] = {}
    for entry in tree:
        path = prefix + entry.name
        if entry.filemode == FileMode.TREE:
            out.update(blobs(entry, path + "/"))
        elif entry.filemode != FileMode.COMMIT:
            out[path] = (entry.id, entry.filemode)
    return out


def _on_disk(work: Path, path: str, mode: int) -> pygit2.Oid | None:
    p = work / path
    try:
        st = p.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if mode == FileMode.LINK:
        if not stat.S_ISLNK(st.st_mode):
            return None
        return pygit2.hash(os.readlink(p).encode())
    if not stat.S_ISREG(st.st_mode):
        return None
    if bool(st.st_mode & 0o100) != (mode == FileMode.BLOB_EXECUTABLE):
        return None
    return pygit2.hashfile(str(p))


def _remove(work: Path, path: str) -> None:
    p = work / path
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        import shutil

        shutil.rmtree(p)
    parent = p.parent
    while parent != work and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _write(repo: pygit2.Repository, work: Path, path: str, oid: pygit2.Oid, mode: int) -> None:
    p = work / path
    cur = work
    for part in Path(path).parts[:-1]:  # a file where a directory must go
        cur = cur / part
        if cur.is_symlink() or cur.is_file():
            cur.unlink()
    if p.is_dir() and not p.is_symlink():
        import shutil

        shutil.rmtree(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = repo[oid].data
    if mode == FileMode.LINK:
        if p.is_symlink() or p.exists():
            p.unlink()
        os.symlink(data.decode(), p)
        return
    tmp = p.with_name(f".{p.name}.volta-tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755 if mode == FileMode.BLOB_EXECUTABLE else 0o644)
    tmp.replace(p)


def export(repo: pygit2.Repository, tree: pygit2.Tree, directory: Path) -> int:
    """Write ``tree``'s files under ``directory``; the repository (index included) is not touched."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = blobs(tree)
    for path, (oid, mode) in files.items():
        _write(repo, directory, path, oid, mode)
    return len(files)


def switch(
    repo: pygit2.Repository,
    tree: pygit2.Tree,
    *,
    leaving: Iterable[pygit2.Tree] = (),
    also_remove: Iterable[str] = (),
    progress: Progress = print,
) -> int:
    """Make the work tree and the index hold exactly ``tree``; returns the files written or removed.

    Files of ``leaving`` (the trees the work tree held, or was being moved
    between) and ``also_remove`` that ``tree`` lacks are removed; no other
    file outside ``tree`` is touched.
    """
    work = Path(repo.workdir)
    target = blobs(tree)
    gone: set[str] = set(also_remove)
    for old in leaving:
        gone.update(p for p in blobs(old) if p not in target)
    changed = 0
    for path in sorted(gone):
        if path in target:
            continue
        p = work / path
        if p.is_symlink() or p.exists():
            faults.point(f"remove {path}")
            _remove(work, path)
            changed += 1
    for path, (oid, mode) in sorted(target.items()):
        if _on_disk(work, path, mode) != oid:
            faults.point(f"write {path}")
            _write(repo, work, path, oid, mode)
            changed += 1
    faults.point("write index")
    index = repo.index
    index.read_tree(tree)
    index.write()
    return changed


def snapshot(repo: pygit2.Repository, ref: str, message: str) -> str:
    """Keep the whole work tree (tracked and untracked, not ignored) as a commit at ``ref``.

    Touches neither the index nor the work tree. Returns ``ref``.
    """
    work = Path(repo.workdir)
    index = pygit2.Index()
    head = None if repo.head_is_unborn else repo[repo.head.target]
    if head is not None:
        index.read_tree(head.tree)
    for path in dirty_paths(repo):
        p = work / path
        if p.is_symlink():
            index.add(pygit2.IndexEntry(path, repo.create_blob(os.readlink(p).encode()), FileMode.LINK))
        elif p.is_file():
            mode = FileMode.BLOB_EXECUTABLE if p.stat().st_mode & 0o100 else FileMode.BLOB
            index.add(pygit2.IndexEntry(path, repo.create_blob_fromdisk(str(p)), mode))
        elif path in index:
            index.remove(path)
    tree = index.write_tree(repo)
    sig = pygit2.Signature("vllm-volta", "vllm-volta@invalid", int(time.time()), 0)
    faults.point(f"snapshot {ref}")
    oid = repo.create_commit(None, sig, sig, message, tree, [head.id] if head is not None else [])
    repo.references.create(ref, oid, force=True)
    return ref


def index_only_damage(repo: pygit2.Repository) -> bool:
    """True when the index differs from HEAD but every file on disk is as HEAD has it.

    That is what an index rewritten by someone else (an older ``prove``) looks
    like: resetting the index to HEAD then loses nothing.
    """
    if repo.head_is_unborn:
        return False
    flags = {p: f for p, f in repo.status().items() if f != FileStatus.CURRENT and not f & FileStatus.IGNORED}
    if not flags:
        return False
    index_bits = FileStatus.INDEX_NEW | FileStatus.INDEX_MODIFIED | FileStatus.INDEX_DELETED | FileStatus.INDEX_RENAMED | FileStatus.INDEX_TYPECHANGE
    if not any(f & index_bits for f in flags.values()):
        return False
    head = blobs(repo[repo.head.target].tree)
    work = Path(repo.workdir)
    for path in flags:
        want = head.get(path)
        if want is None:
            if (work / path).exists() or (work / path).is_symlink():
                return False
        elif _on_disk(work, path, want[1]) != want[0]:
            return False
    return True


def reset_index(repo: pygit2.Repository) -> None:
    faults.point("reset index to HEAD")
    index = repo.index
    index.read_tree(repo[repo.head.target].tree)
    index.write()
