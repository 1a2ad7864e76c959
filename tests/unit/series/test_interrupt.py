"""Fault injection: every command, interrupted at every point, then rerun, ends as if never interrupted.

Each mutating step of the engine calls ``faults.point()``; the hook here
raises ``faults.Interrupted`` (a BaseException, as nothing survives a kill) at
the Nth point. For every N until the command runs through, on a fresh small
synthetic checkout:

- right after the interruption, nothing is lost: every patch text, the pin
  and the user's uncommitted edit can still be had (on disk, in a backup
  folder the engine named, or as a commit of a ref in upstream/);
- the recovery (the plain rerun, or the one command the tool points to)
  reaches the end state of an uninterrupted run: patches/, series/, pin.toml,
  upstream/'s HEAD, refs, index and every file of its work tree;
- the same holds when the recovery is itself interrupted once more (at its
  1st and 2nd points) and then run again.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import re
import shutil
import tarfile
from pathlib import Path
from typing import Callable

import pygit2
import pytest

from vllm_volta.series import backup, faults, patchfile, rebase, releases, stack, upstream, worktree

from . import test_no_loss as nl
from .synth import commit_change, lines, make_root, reset_upstream, snapshot
from .test_rebase import _resolve_conflict

quiet = lambda *_: None  # noqa: E731
EDIT = "my uncommitted edit\n"
TOTALS: dict[str, tuple[int, int]] = {}  # scenario -> (points tried, recoveries checked)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_VOLTA_CACHE", str(tmp_path / "cache"))


# -- scenarios ------------------------------------------------------------------


@dataclasses.dataclass
class Scenario:
    name: str
    setup: Callable[[Path, pytest.MonkeyPatch], Path]
    run: Callable[[Path], object]
    recover: Callable[[Path], object] | None = None  # default: run again
    edit: str = ""  # a file of upstream/ holding the user's uncommitted edit (must survive)


def _git_root(root: Path) -> Path:
    """Make the checkout itself a git repository with patches/, series/ and pin.toml committed."""
    repo = pygit2.init_repository(str(root), initial_head="main")
    (root / ".gitignore").write_text("/upstream/\n/.upstream-import/\n")
    repo.index.add_all(["patches", "series", "pin.toml", ".gitignore", "tests"])
    repo.index.write()
    sig = pygit2.Signature("t", "t@invalid", 1_700_000_000, 0)
    repo.create_commit("HEAD", sig, sig, "checkout\n", repo.index.write_tree(), [])
    return root


def _three(tmp: Path, mp) -> Path:
    return nl._three(tmp)


def _pristine(tmp: Path, mp) -> Path:
    root = nl._three(tmp)
    reset_upstream(root)
    return root


def _with_extra_and_edit(tmp: Path, mp) -> Path:
    root = nl._three(tmp)
    commit_change(root, "fourth: not in the series", {"d.py": "d\n"}, tier="optional")
    (root / "upstream" / "a.py").write_text(EDIT)
    return root


def _amended(tmp: Path, mp) -> Path:
    root = _git_root(nl._three(tmp))
    repo = nl._repo(root)
    first, second, third = stack.chain(upstream.open_upstream(root))
    # amend "second" (another file content) and replay "third" on it, then add a fourth
    (root / "upstream" / "pkg" / "c.py").write_text("new file, amended\n")
    repo.index.add("pkg/c.py")
    repo.index.write()
    amended = repo.create_commit(None, second.author, second.author, second.message.replace("add c", "add c, amended"),
                                 repo.index.write_tree(), [first.id])
    merged = repo.merge_trees(second.tree, repo[amended].tree, third.tree).write_tree(repo)
    new3 = repo.create_commit(None, third.author, third.author, third.message, merged, [amended])
    repo.references.create(upstream.BRANCH_REF, new3, force=True)
    repo.checkout(upstream.BRANCH_REF, strategy=pygit2.enums.CheckoutStrategy.FORCE)
    commit_change(root, "fourth: more", {"d.py": "d\n"}, tier="optional")
    return root


def _dropped(tmp: Path, mp) -> Path:
    root = nl._three(tmp)
    repo = nl._repo(root)
    first, second, third = stack.chain(upstream.open_upstream(root))
    tree = repo.merge_trees(second.tree, third.tree, first.tree).write_tree(repo)
    new = repo.create_commit(None, third.author, third.author, third.message, tree, [first.id])
    repo.references.create(upstream.BRANCH_REF, new, force=True)
    repo.checkout(upstream.BRANCH_REF, strategy=pygit2.enums.CheckoutStrategy.FORCE)
    return root


def _rebase(tmp: Path, mp) -> Path:
    return nl._rebase_root(tmp)


def _stopped(tmp: Path, mp) -> Path:
    root = nl._rebase_root(tmp)
    rebase.start(root, "v0.0.2", progress=quiet)
    _resolve_conflict(root)
    return root


def _stopped_plain(tmp: Path, mp) -> Path:
    root = nl._rebase_root(tmp)
    rebase.start(root, "v0.0.2", progress=quiet)
    return root


def _complete(tmp: Path, mp) -> Path:
    root = make_root(tmp, {"a.py": nl.A, "b.py": lines(10, "b")})
    commit_change(root, "edit a", {"a.py": nl.A.replace("line 5\n", "ours 5\n")})
    commit_change(root, "edit b", {"b.py": lines(10, "b").replace("b 3\n", "ours 3\n")}, tier="recommended")
    stack.refresh(root, progress=quiet)
    mp.setenv("VLLM_VOLTA_CACHE", str(tmp / "cache"))
    files = {"a.py": nl.A.replace("line 25\n", "u\n"), "b.py": lines(10, "b"), "n.py": "n\n", "PKG-INFO": "x\n"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in sorted(files.items()):
            info = tarfile.TarInfo(f"up-0.0.2/{path}")
            info.size, info.mode, info.mtime = len(text.encode()), 0o644, 0
            tar.addfile(info, io.BytesIO(text.encode()))
    data = gzip.compress(buf.getvalue(), mtime=0)  # the same bytes, so the same ids, every time
    (tmp / "cache" / "sdist").mkdir(parents=True, exist_ok=True)
    (tmp / "cache" / "sdist" / "up-0.0.2.tar.gz").write_bytes(data)
    rel = releases.Release("0.0.2", "up-0.0.2.tar.gz", len(data), hashlib.sha256(data).hexdigest(),
                           "2025-09-01T12:00:00+00:00")
    mp.setattr(releases, "releases", lambda project="vllm", progress=print: [rel])
    rebase.start(root, "0.0.2", progress=quiet)
    assert not rebase.in_progress(root)["stopped"]
    return root


def _sdist(tmp: Path, mp) -> Path:
    mp.setenv("VLLM_VOLTA_CACHE", str(tmp / "cache"))
    return nl._sdist_root(tmp)


SCENARIOS = [
    Scenario("apply (pristine upstream)", _pristine, lambda r: stack.apply(r, progress=quiet)),
    Scenario("apply --tier critical", _three, lambda r: stack.apply(r, tier="critical", progress=quiet)),
    Scenario("apply --force (extra commit, edit)", _with_extra_and_edit,
             lambda r: stack.apply(r, force=True, progress=quiet), edit="a.py"),
    Scenario("apply (fresh sdist import)", _sdist, lambda r: stack.apply(r, progress=quiet)),
    Scenario("refresh (amended + new commit)", _amended, lambda r: stack.refresh(r, progress=quiet)),
    Scenario("refresh --force (a patch dropped)", _dropped, lambda r: stack.refresh(r, force=True, progress=quiet)),
    Scenario("refresh --onto (stops at a conflict)", _rebase, lambda r: rebase.start(r, "v0.0.2", progress=quiet)),
    Scenario("refresh --continue", _stopped, lambda r: rebase.cont(r, progress=quiet)),
    Scenario("refresh --abort", _stopped, lambda r: rebase.abort(r, progress=quiet)),
    Scenario("refresh --abort (nothing resolved)", _stopped_plain, lambda r: rebase.abort(r, progress=quiet)),
    Scenario("refresh --accept", _complete, lambda r: rebase.accept(r, progress=quiet)),
]


# -- what is compared -----------------------------------------------------------


TIMED_REFS = (stack.BACKUP_PREFIX, rebase.PRE_ONTO_PREFIX)


def observe(root: Path) -> dict:
    """The end state: checkout files, upstream/'s HEAD, refs, index and work tree."""
    repo = nl._repo(root)
    work = root / "upstream"
    files = {
        str(p.relative_to(work)): (p.read_bytes(), p.stat().st_mode & 0o100)
        for p in sorted(work.rglob("*"))
        if ".git" not in p.relative_to(work).parts and (p.is_file() or p.is_symlink())
    }
    state = rebase.in_progress(root)
    return {
        "checkout": snapshot(root),
        # the pin names the pre-onto backup, stamped with the second the setup ran
        "pin": re.sub(rb"pre-onto/\d{8}-\d{6}", b"pre-onto/STAMP", (root / "pin.toml").read_bytes()),
        "head": repo.head.name if not repo.head_is_detached else str(repo.head.target),
        "refs": {r: str(repo.references[r].target) for r in repo.references
                 if not r.startswith(TIMED_REFS)},
        "index": str(repo.index.write_tree()) if not repo.index.conflicts else "conflicts",
        "work": files,
        "dirty": worktree.dirty_paths(repo),
        "replay": None if state is None else {k: state.get(k) for k in ("rows", "next", "stopped", "tip", "onto")},
        "staging": (root / upstream.STAGING).exists(),
    }


def _all_texts(root: Path) -> set[bytes]:
    """Every patch text that can still be had: on disk, in a backup folder, or from a commit of any ref."""
    out: set[bytes] = set()
    for folder in (root / "patches", backup.backup_root(root), upstream.cache_dir() / "backup"):
        if folder.exists():
            out.update(p.read_bytes() for p in folder.rglob("*.patch"))
    if (root / ".git").is_dir():  # committed in the checkout: `git checkout` gives it back
        head = pygit2.Repository(str(root)).head.peel(pygit2.Commit).tree
        if "patches" in head:
            out.update(head[f"patches/{e.name}"].data for e in head["patches"])
    repo = upstream._open(root / "upstream") or upstream._open(root / upstream.STAGING)
    if repo is not None:
        for name in repo.references:
            commit = repo.references[name].peel()
            for _ in range(50):
                if not isinstance(commit, pygit2.Commit) or len(commit.parents) != 1:
                    break
                out.add(patchfile.emit(patchfile.from_commit(repo, commit)).encode())
                commit = commit.parents[0]
    return out


def _edit_kept(root: Path, rel: str) -> bool:
    if (root / "upstream" / rel).exists() and (root / "upstream" / rel).read_text() == EDIT:
        return True
    repo = nl._repo(root)
    for name in repo.references:
        try:
            if repo.references[name].peel(pygit2.Commit).tree[rel].data == EDIT.encode():
                return True
        except (KeyError, ValueError):
            continue
    return False


def _pins_kept(root: Path, pin: bytes) -> bool:
    if (root / "pin.toml").read_bytes() == pin:
        return True
    folders = [backup.backup_root(root), upstream.cache_dir() / "backup"]
    return any(f.exists() and any(p.read_bytes() == pin for p in f.rglob("pin.toml")) for f in folders)


def _run_with_fault(fn, n: int) -> bool:
    """Run ``fn`` interrupted at its nth point; True if it was interrupted."""
    count = [0]

    def hook(label):
        count[0] += 1
        if count[0] == n:
            raise faults.Interrupted(label)

    faults.install(hook)
    try:
        fn()
    except faults.Interrupted:
        return True
    finally:
        faults.install(None)
    return False


def _fresh(tmp_path: Path, tag: str, sc: Scenario, mp) -> Path:
    where = tmp_path / tag
    where.mkdir()
    return sc.setup(where, mp)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_interruption_point_recovers_and_loses_nothing(sc: Scenario, tmp_path, monkeypatch):
    ref_root = _fresh(tmp_path, "ref", sc, monkeypatch)
    sc.run(ref_root)
    end = observe(ref_root)
    recover = sc.recover or sc.run
    tried = checked = 0
    n = 0
    while True:
        n += 1
        assert n < 500, "the command never ran through"
        root = _fresh(tmp_path, f"n{n}", sc, monkeypatch)
        texts = _all_texts(root) & {p.read_bytes() for p in (root / "patches").glob("*.patch")}
        pin = (root / "pin.toml").read_bytes()
        if not _run_with_fault(lambda: sc.run(root), n):
            assert observe(root) == end
            break
        tried += 1
        # nothing lost, right after the interruption
        assert texts <= _all_texts(root), f"a patch text was lost at point {n}"
        assert _pins_kept(root, pin), f"the pin was lost at point {n}"
        if sc.edit:
            assert _edit_kept(root, sc.edit), f"the uncommitted edit was lost at point {n}"
        # the recovery, itself interrupted at its first points, then run through
        for k in (1, 2):
            again = tmp_path / f"n{n}-k{k}"
            shutil.copytree(root.parent, again, symlinks=True)
            r2 = again / root.name
            if _run_with_fault(lambda: recover(r2), k):
                assert texts <= _all_texts(r2), f"a patch text was lost at point {n} then {k}"
                recover(r2)
            assert observe(r2) == end, f"interrupted at point {n}, recovery at {k}"
            checked += 1
            shutil.rmtree(again)
        recover(root)
        assert observe(root) == end, f"interrupted at point {n}: the rerun did not reach the end state"
        checked += 1
        shutil.rmtree(root.parent)
    assert tried >= 3, f"only {tried} interruption points in {sc.name}"
    TOTALS[sc.name] = (tried, checked)
    print(f"\n{sc.name}: {tried} interruption points, {checked} recoveries checked, nothing lost")
