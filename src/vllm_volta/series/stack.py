"""Apply the series onto the upstream base as commits, and refresh it back from them."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pygit2
from pygit2.enums import ApplyLocation

from . import backup as backup_mod
from . import faults, guard, model, patchfile, worktree
from .upstream import BRANCH, BRANCH_REF, Progress, Upstream, materialize, open_upstream

BACKUP_PREFIX = "refs/volta/backup/"

APPLIED = "applied"
ALREADY = "already applied"
CONFLICT = "conflict"
PENDING = "not reached"
MISSING_FILE = "file missing"
UNAPPLIED = "unapplied"


class StackError(RuntimeError):
    """apply or refresh cannot go on; the message says why and what to do."""


@dataclasses.dataclass
class Outcome:
    name: str
    tier: str
    state: str
    commit: str = ""
    detail: str = ""


@dataclasses.dataclass
class ApplyResult:
    upstream: Upstream
    outcomes: list[Outcome]
    seconds: float
    backup: str = ""

    @property
    def ok(self) -> bool:
        return all(o.state in (APPLIED, ALREADY, UNAPPLIED) for o in self.outcomes)


# ----------------------------------------------------------------------
# reading the branch


def chain(up: Upstream, tip: pygit2.Oid | str | None = None) -> list[pygit2.Commit]:
    """The commits of branch volta (or from ``tip``) above the base, oldest first."""
    if tip is None:
        ref = up.repo.references.get(BRANCH_REF)
        if ref is None:
            return []
        tip = ref.target
    commits = []
    commit = up.repo[tip]
    while commit.id != up.base.id:
        if len(commit.parents) != 1:
            raise StackError(
                f"branch {BRANCH} in {up.path} has {'a merge' if commit.parents else 'a root'} "
                f"commit {commit.short_id} above the base; a series is a straight line. "
                f"Rebase {BRANCH} onto {up.base.short_id} without merges, then run again."
            )
        commits.append(commit)
        commit = commit.parents[0]
        if len(commits) > 100_000:
            break
    commits.reverse()
    return commits


dirty_paths = worktree.dirty_paths


def _refuse_dirty(up: Upstream, verb: str) -> None:
    dirty = dirty_paths(up.repo)
    if not dirty:
        return
    shown = "\n  ".join(dirty[:10]) + ("\n  ..." if len(dirty) > 10 else "")
    raise StackError(
        f"{up.path} has uncommitted edits; {verb} touches nothing until they are kept:\n  {shown}\n"
        f"To keep them as a patch: commit them on branch {BRANCH} in {up.path} (with the header "
        "fields, see docs/patches.md) and run `nox -s refresh` (it refuses rather than drop a patch).\n"
        f"To set them aside: `nox -s apply -- --force` keeps them as a commit under {BACKUP_PREFIX}edits-* "
        f"and names it (`git -C {up.path} cherry-pick --no-commit <that ref>` brings them back)."
    )


# ----------------------------------------------------------------------
# apply


def _conflict_detail(repo: pygit2.Repository, patch: patchfile.Patch) -> str:
    """Which file and hunk of ``patch`` do not apply to HEAD."""
    details = []
    for file_diff in _split_files(patch.diff):
        diff = pygit2.Diff.parse_diff(file_diff.text)
        if repo.applies(diff, ApplyLocation.INDEX):
            continue
        if not file_diff.hunks:
            details.append(f"{file_diff.path}: the file is missing, or exists already")
            continue
        bad = [
            h.header
            for h in file_diff.hunks
            if not repo.applies(pygit2.Diff.parse_diff(file_diff.head + h.text), ApplyLocation.INDEX)
        ]
        details.append(
            f"{file_diff.path}: hunk {', '.join(bad) if bad else '(only as a whole)'} does not match"
        )
    return "; ".join(details) or "libgit2 refused the diff as a whole"


@dataclasses.dataclass
class _Hunk:
    header: str
    text: str


@dataclasses.dataclass
class _FileDiff:
    path: str
    head: str
    hunks: list[_Hunk]

    @property
    def text(self) -> str:
        return self.head + "".join(h.text for h in self.hunks)


def _split_files(diff: str) -> list[_FileDiff]:
    files: list[_FileDiff] = []
    for chunk in diff.split("\ndiff --git ")[0:]:
        if not chunk.strip():
            continue
        if not chunk.startswith("diff --git "):
            chunk = "diff --git " + chunk
        if not chunk.endswith("\n"):
            chunk += "\n"
        first = chunk.splitlines()[0]
        path = first.split(" b/", 1)[-1]
        at = chunk.find("\n@@ ")
        if at < 0:
            files.append(_FileDiff(path, chunk, []))
            continue
        head, body = chunk[: at + 1], chunk[at + 1 :]
        hunks = []
        for piece in ("\n" + body).split("\n@@ ")[1:]:
            text = "@@ " + piece
            if not text.endswith("\n"):
                text += "\n"
            hunks.append(_Hunk(text.split(" @@", 1)[0] + " @@", text))
        files.append(_FileDiff(path, head, hunks))
    return files


def commit_patch(repo: pygit2.Repository, patch: patchfile.Patch) -> pygit2.Oid:
    """Apply ``patch`` exactly onto HEAD (work tree and index) and commit it.

    Committer is the author, so the commit id depends on the patch and its
    parent only.
    """
    parent = repo.head.target
    if patch.diff:
        faults.point(f"apply {patch.subject}")
        repo.apply(patchfile.parse_diff(patch), ApplyLocation.BOTH)
        repo.index.write()
    tree = repo.index.write_tree()
    sig = patch.signature()
    faults.point(f"commit {patch.subject}")
    return repo.create_commit(BRANCH_REF, sig, sig, patch.message, tree, [parent])


# An apply in progress: written before apply first changes upstream/, removed when
# it ends. Found by the next run, it means the last one was interrupted, and
# what the work tree holds beyond branch volta is that run's half-done work.
JOURNAL = "volta-apply.json"


def _journal(up: Upstream) -> Path:
    return Path(up.repo.path) / JOURNAL


def _start_journal(up: Upstream) -> None:
    head = up.repo[up.repo.head.target] if not up.repo.head_is_unborn else up.base
    faults.point("write apply journal")
    tmp = _journal(up).with_suffix(".tmp")
    tmp.write_text(json.dumps({"tree": str(head.tree.id), "pid": os.getpid()}) + "\n", encoding="utf-8")
    tmp.replace(_journal(up))


def _end_journal(up: Upstream) -> None:
    faults.point("remove apply journal")
    _journal(up).unlink(missing_ok=True)


def recover(up: Upstream, progress: Progress = print) -> None:
    """Undo what an interrupted apply left in upstream/ (call with the checkout lock held)."""
    repo = up.repo
    worktree.clear_stale_lock(repo, progress)
    journal = _journal(up)
    if journal.exists():
        try:
            was = repo[json.loads(journal.read_text(encoding="utf-8"))["tree"]]
        except (ValueError, KeyError, TypeError):
            was = None
        dirty = dirty_paths(repo)
        kept = ""
        if dirty:
            kept = worktree.snapshot(
                repo, f"{BACKUP_PREFIX}interrupted-{int(time.time())}",
                "work tree of upstream/ as an interrupted apply left it\n")
        head = repo[repo.head.target]
        untracked = [p for p in dirty if p not in worktree.blobs(head.tree)]
        worktree.switch(repo, head.tree, leaving=[was] if was is not None else [], also_remove=untracked)
        _end_journal(up)
        progress(
            f"recovered from an interrupted apply: {up.path} reset to branch {BRANCH} at {head.short_id}"
            + (f"; the work tree as it was left is kept as {kept}" if kept else "")
        )
    if worktree.index_only_damage(repo):
        worktree.reset_index(repo)
        progress(f"{up.path}: the index differed from branch {BRANCH} while every file matches it "
                 "(left by an older `prove`); index reset, no file touched")


def _refuse_mid_replay(up: Upstream, verb: str) -> None:
    if (Path(up.repo.path) / "volta-rebase" / "state.json").exists():  # rebase.STATE_DIR
        raise StackError(
            f"a replay (refresh --onto) is in progress in {up.path}; {verb} waits until it is finished: "
            "`nox -s refresh -- --continue`, `--accept` or `--abort`"
        )


def _interrupted_checkout(up: Upstream) -> bool:
    """A fresh sdist import whose checkout was cut short: only files missing, none changed."""
    repo = up.repo
    if up.source != "sdist" or repo.head_is_unborn or repo.head.target != up.base.id:
        return False
    flags = [f for p, f in repo.status().items() if f != pygit2.enums.FileStatus.CURRENT
             and not f & pygit2.enums.FileStatus.IGNORED]
    return bool(flags) and all(f == pygit2.enums.FileStatus.WT_DELETED for f in flags)


def _read_series(root: Path, series: model.Series, wanted: list[model.Entry]):
    texts: dict[str, str] = {}
    for e in series.entries:
        path = series.path_of(e)
        try:
            texts[e.name] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise model.SeriesError(
                f"{series.series_path}:{e.line} names {e.name}, which is not in patches/; restore it "
                f"(`git checkout -- patches/{e.name}`) or remove the line, then run again"
            ) from None
    patches = {}
    for e in wanted:
        try:
            patch = patchfile.parse(texts[e.name], source=f"patches/{e.name}")
            if patch.diff:
                patchfile.parse_diff(patch, source=f"patches/{e.name}")
        except patchfile.PatchFormatError as exc:
            raise model.SeriesError(f"{exc}; fix the file (see docs/patches.md) and run again") from None
        patches[e.name] = patch
    return texts, patches


def apply(
    root: Path | str,
    *,
    tier: str | None = None,
    force: bool = False,
    progress: Progress = print,
) -> ApplyResult:
    """Make branch volta in upstream/ hold the series (up to ``tier``) as commits."""
    with guard.checkout(root, progress):
        return _apply(Path(root), tier=tier, force=force, progress=progress)


def _apply(root: Path, *, tier: str | None, force: bool, progress: Progress) -> ApplyResult:
    started = time.monotonic()
    series = model.Series.load(root)
    wanted = series.upto(tier)
    texts, patches = _read_series(root, series, wanted)
    up = materialize(root, progress)
    repo = up.repo
    _refuse_mid_replay(up, "apply")
    recover(up, progress)
    if _interrupted_checkout(up):
        progress(f"{up.path}: finishing the checkout an interrupted run left half done")
        worktree.switch(repo, up.base.tree)
    edits = ""
    if force and dirty_paths(repo):
        dirty = dirty_paths(repo)
        edits = worktree.snapshot(repo, f"{BACKUP_PREFIX}edits-{int(time.time())}",
                                  "uncommitted edits in upstream/, set aside by apply --force\n")
        head = repo[repo.head.target]
        worktree.switch(repo, head.tree, also_remove=[p for p in dirty if p not in worktree.blobs(head.tree)])
    else:
        _refuse_dirty(up, "apply")

    current = chain(up)
    emitted = [patchfile.emit(patchfile.from_commit(repo, c)) for c in current]

    # How many commits of the branch already are the wanted series, in order.
    same = 0
    while same < min(len(current), len(wanted)) and emitted[same] == texts[wanted[same].name]:
        same += 1
    outcomes: list[Outcome] = [
        Outcome(e.name, e.tier, ALREADY, str(current[i].id)[:12]) for i, e in enumerate(wanted[:same])
    ]
    extra = current[same:]
    backup = ""
    if extra:
        # Commits above the wanted prefix are only safe to drop when the
        # series holds them at the same place (e.g. a later tier's patches).
        unsaved = [
            c
            for i, c in enumerate(extra, start=same)
            if i >= len(series.entries) or emitted[i] != texts[series.entries[i].name]
        ]
        if unsaved and not force:
            first = unsaved[0]
            whole = same == len(series.entries)
            keep = (
                "To keep them: `nox -s refresh` writes them into patches/."
                if whole else
                f"To keep them: `nox -s apply -- --force` moves them aside (kept under {BACKUP_PREFIX}), "
                f"then rebuild them on top of the series and `nox -s refresh`; branch {BRANCH} differs "
                f"from the series from patch {same + 1} on, so a refresh now would refuse."
            )
            raise StackError(
                f"branch {BRANCH} in {up.path} has {len(unsaved)} commit(s) that are not in the "
                f"series (first: {first.short_id} {first.message.splitlines()[0]!r}). Nothing was "
                f"changed.\n{keep}\n"
                "To drop them: `nox -s apply -- --force` (the old tip is kept under "
                f"{BACKUP_PREFIX})."
            )
        _start_journal(up)
        backup = f"{BACKUP_PREFIX}{int(time.time())}"
        faults.point("backup ref")
        repo.references.create(backup, current[-1].id, force=True)
        keep_id = current[same - 1].id if same else up.base.id
        faults.point("move branch")
        repo.references.create(BRANCH_REF, keep_id, force=True)
        repo.set_head(BRANCH_REF)
        worktree.switch(repo, repo[keep_id].tree, leaving=[current[-1].tree])
        for c, i in zip(extra, range(same, same + len(extra))):
            if i < len(series.entries) and series.entries[i] not in wanted:
                outcomes.append(Outcome(series.entries[i].name, series.entries[i].tier, UNAPPLIED))
    else:
        if repo.head_is_detached or repo.head.name != BRANCH_REF:
            faults.point("set HEAD")
            repo.set_head(BRANCH_REF)
        _start_journal(up)

    todo = wanted[same:]
    for n, entry in enumerate(todo, start=same + 1):
        patch = patches[entry.name]
        if patch.diff and not repo.applies(patchfile.parse_diff(patch), ApplyLocation.INDEX):
            detail = _conflict_detail(repo, patch)
            outcomes.append(Outcome(entry.name, entry.tier, CONFLICT, detail=detail))
            outcomes.extend(Outcome(e.name, e.tier, PENDING) for e in todo[n - same :])
            good = wanted[n - 2].name if n > 1 else f"the base {up.base.short_id}"
            _end_journal(up)
            raise _ApplyConflict(
                ApplyResult(up, outcomes, time.monotonic() - started, backup),
                f"{entry.name} does not apply exactly: {detail}.\n"
                f"{up.path} is left at {good} (branch {BRANCH}), clean; nothing is lost.\n"
                f"To go on: correct patches/{entry.name} and run `nox -s apply` again; or make the "
                f"change by hand in {up.path}, commit it with the patch's message, commit the rest of "
                "the series on top, then `nox -s refresh`.",
            )
        oid = commit_patch(repo, patch)
        progress(f"[{n}/{len(wanted)}] applied {entry.name}")
        outcomes.append(Outcome(entry.name, entry.tier, APPLIED, str(oid)[:12]))
    _end_journal(up)
    if edits:
        progress(f"your uncommitted edits are kept as {edits}; `git -C {up.path} cherry-pick --no-commit "
                 f"{edits}` brings them back")
    return ApplyResult(up, outcomes, time.monotonic() - started, backup or edits)


class _ApplyConflict(StackError):
    def __init__(self, result: ApplyResult, message: str):
        super().__init__(message)
        self.result = result


ApplyConflict = _ApplyConflict


# ----------------------------------------------------------------------
# refresh

WRITTEN = "written"
UNCHANGED = "unchanged"
REMOVED = "removed"


@dataclasses.dataclass
class RefreshResult:
    files: list[tuple[str, str]]  # (path relative to root, WRITTEN/UNCHANGED/REMOVED)
    seconds: float
    backup: str = ""  # the folder keeping the files replaced or removed, when one was made

    @property
    def changed(self) -> list[str]:
        return [p for p, s in self.files if s != UNCHANGED]


def render(up: Upstream, tip: pygit2.Oid | str | None = None) -> tuple[list[tuple[str, str, str]], str]:
    """(name, tier, text) for each commit of the branch (or up to ``tip``), and the series text."""
    rendered = []
    last_tier = 0
    for n, commit in enumerate(chain(up, tip), start=1):
        patch = patchfile.from_commit(up.repo, commit)
        tier = patch.fields.get("Tier", "").lower()
        if tier not in model.TIERS:
            raise StackError(
                f"commit {commit.short_id} {patch.subject!r} has no valid 'Tier:' field "
                f"(one of {', '.join(model.TIERS)}); amend its message, then refresh again"
            )
        if model.TIERS.index(tier) < last_tier:
            raise StackError(
                f"commit {commit.short_id} {patch.subject!r} is tier {tier!r} but comes after a "
                f"{model.TIERS[last_tier]!r} patch; reorder branch {BRANCH} so tiers run "
                f"{' < '.join(model.TIERS)}"
            )
        last_tier = model.TIERS.index(tier)
        rendered.append((patchfile.filename(n, patch.subject), tier, patchfile.emit(patch)))
    return rendered, model.render_series([(name, tier) for name, tier, _ in rendered])


def _write_if_changed(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    faults.point(f"write {path.name}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def _committed(root: Path):
    """A function telling whether a file under ``root`` is as the checkout's git HEAD has it."""
    try:
        repo = pygit2.Repository(str(root))
        if Path(repo.workdir or "").resolve() != root.resolve():
            raise pygit2.GitError
        status = repo.status()
    except (pygit2.GitError, KeyError, ValueError):
        return lambda rel: False
    return lambda rel: rel not in status or status[rel] == pygit2.enums.FileStatus.CURRENT and _tracked(repo, rel)


def _tracked(repo: pygit2.Repository, rel: str) -> bool:
    try:
        repo.head.peel(pygit2.Commit).tree[rel]
    except (KeyError, pygit2.GitError):
        return False
    return True


@dataclasses.dataclass
class _Plan:
    writes: list[tuple[str, str]]  # (rel path, text)
    removes: list[str]
    files: list[tuple[str, str]]  # the report rows
    risky: list[tuple[str, str]]  # (rel path, why it cannot be rebuilt)


def _plan(root: Path, rendered: list[tuple[str, str, str]], series_text: str) -> _Plan:
    patch_dir = root / model.PATCH_DIR
    new_texts = {text.encode("utf-8") for _, _, text in rendered}
    keep = {name for name, _, _ in rendered}
    committed = _committed(root)
    try:
        old_count = len(model.Series.load(root).entries)
    except model.SeriesError:
        old_count = len(list(patch_dir.glob("*.patch")))
    writes, removes, files, risky = [], [], [], []
    for name, _, text in rendered:
        rel = f"{model.PATCH_DIR}/{name}"
        path = root / rel
        old = path.read_bytes() if path.exists() else None
        if old == text.encode("utf-8"):
            files.append((rel, UNCHANGED))
            continue
        writes.append((rel, text))
        files.append((rel, WRITTEN))
        if old is not None and old not in new_texts and not committed(rel):
            risky.append((rel, "has edits not committed in this checkout, and branch volta holds other text"))
    for stale in sorted(patch_dir.glob("*.patch")):
        if stale.name in keep:
            continue
        rel = f"{model.PATCH_DIR}/{stale.name}"
        removes.append(rel)
        files.append((rel, REMOVED))
        # A removed file is rebuilt by the branch when it only moved (renumbered), or by
        # git when it is committed and the series does not shrink (a renamed subject).
        # A shrinking series (a shorter branch, a dropped patch) needs --force.
        if stale.read_bytes() not in new_texts:
            if not committed(rel):
                risky.append((rel, "no commit of branch volta holds it"))
            elif len(rendered) < old_count:
                risky.append((rel, f"would go (the series would shrink from {old_count} to {len(rendered)} patches)"))
    series_rel = str(model.SERIES_FILE)
    series_path = root / model.SERIES_FILE
    old_series = series_path.read_bytes() if series_path.exists() else None
    if old_series == series_text.encode("utf-8"):
        files.append((series_rel, UNCHANGED))
    else:
        writes.append((series_rel, series_text))
        files.append((series_rel, WRITTEN))
        if old_series is not None and not committed(series_rel):
            try:
                old_names = [e.name for e in model.parse_series(old_series.decode("utf-8"), source=series_rel)]
            except (model.SeriesError, UnicodeDecodeError):
                old_names = None
            def kept(name: str) -> bool:
                path = patch_dir / name
                return name in keep or (path.exists() and path.read_bytes() in new_texts)

            if old_names is None or not all(kept(n) for n in old_names):
                risky.append((series_rel, "has edits not committed in this checkout"))
    return _Plan(writes, removes, files, risky)


def write_series(
    root: Path,
    rendered: list[tuple[str, str, str]],
    series_text: str,
    *,
    force: bool = False,
    always_backup: str = "",
    hint: str = "",
    progress: Progress = print,
) -> tuple[list[tuple[str, str]], str]:
    """Write patches/ and series/ as rendered; refuse what cannot be rebuilt unless ``force``.

    Returns the report rows and the backup folder ("" when none was made).
    ``always_backup`` (a reason) backs up every file changed or removed.
    """
    plan = _plan(root, rendered, series_text)
    for tmp in [*(root / model.PATCH_DIR).glob("*.patch.tmp"), (root / model.SERIES_FILE).with_name("series.tmp")]:
        tmp.unlink(missing_ok=True)  # left by an interrupted write
    if plan.risky and not force:
        shown = "; ".join(f"{rel} {why}" for rel, why in plan.risky[:4])
        more = f" (and {len(plan.risky) - 4} more)" if len(plan.risky) > 4 else ""
        uncommitted = any("would go" not in why for _, why in plan.risky)
        raise StackError(
            f"refresh would lose {len(plan.risky)} file(s): {shown}{more}. Nothing was changed. {hint}"
            + ("Commit them in this checkout (or put their commits on branch volta) and run again; or "
               if uncommitted else "If dropping them is what you mean, ")
            + "`nox -s refresh -- --force` replaces them, keeping a copy it names."
        )
    backup = ""
    changed = [rel for rel, _ in plan.writes if (root / rel).exists()] + plan.removes
    if changed and (plan.risky or always_backup):
        why = always_backup or "refresh --force: " + "; ".join(f"{r} {w}" for r, w in plan.risky)
        backup = str(backup_mod.keep(root, changed, why=why))
        progress(f"kept a copy of the {len(changed)} file(s) replaced or removed in {backup}")
    for rel, text in plan.writes:
        if rel != str(model.SERIES_FILE):
            _write_if_changed(root / rel, text)
    for rel, text in plan.writes:
        if rel == str(model.SERIES_FILE):
            _write_if_changed(root / rel, text)
    for rel in plan.removes:
        faults.point(f"remove {rel}")
        (root / rel).unlink(missing_ok=True)
    return plan.files, backup


def refresh(root: Path | str, *, force: bool = False, progress: Progress = print) -> RefreshResult:
    """Rewrite patches/ and series/ from branch volta; only changed files are written."""
    root = Path(root)
    with guard.checkout(root, progress):
        started = time.monotonic()
        up = open_upstream(root)
        if up is None:
            raise StackError(f"{root / 'upstream'} is not materialized; run `nox -s apply` first")
        if up.repo.references.get(BRANCH_REF) is None:
            raise StackError(
                f"{up.path} has no branch {BRANCH}, so there is nothing to refresh from (refreshing would "
                "empty the series); nothing was changed. Run `nox -s apply` to make it."
            )
        _refuse_mid_replay(up, "refresh")
        worktree.clear_stale_lock(up.repo, progress)
        dirty = dirty_paths(up.repo)
        if dirty:
            progress(
                f"warning: {len(dirty)} uncommitted path(s) in {up.path} are in no patch "
                f"(e.g. {dirty[0]}); commit them on {BRANCH} to include them"
            )
        rendered, series_text = render(up)
        hint = _shorter_hint(root, up, rendered)
        files, backup = write_series(root, rendered, series_text, force=force, hint=hint, progress=progress)
        return RefreshResult(files, time.monotonic() - started, backup)


def _shorter_hint(root: Path, up: Upstream, rendered) -> str:
    try:
        series = model.Series.load(root)
    except model.SeriesError:
        return ""
    n = len(rendered)
    if n >= len(series.entries):
        return ""
    same = all(
        series.path_of(e).exists() and series.path_of(e).read_text(encoding="utf-8") == text
        for e, (_, _, text) in zip(series.entries[:n], rendered)
    )
    if not same:
        return ""
    return (
        f"Branch {BRANCH} holds only the first {n} of the series' {len(series.entries)} patches "
        "(a tier apply or a stopped apply): `nox -s apply` puts the rest on it first. "
    )


# ----------------------------------------------------------------------
# status


def status(root: Path | str) -> list[Outcome]:
    """Each series entry and whether branch volta holds it at its place."""
    root = Path(root)
    series = model.Series.load(root)
    up = open_upstream(root)
    current = chain(up) if up else []
    rows = []
    for i, entry in enumerate(series.entries):
        text = series.path_of(entry).read_text(encoding="utf-8") if series.path_of(entry).exists() else None
        if text is None:
            rows.append(Outcome(entry.name, entry.tier, MISSING_FILE, str(current[i].id)[:12] if i < len(current) else "",
                                f"series/series:{entry.line} lists it; restore it or refresh"))
        elif i < len(current):
            same = text is not None and patchfile.emit(patchfile.from_commit(up.repo, current[i])) == text
            rows.append(
                Outcome(entry.name, entry.tier, ALREADY if same else "differs from branch", str(current[i].id)[:12])
            )
        else:
            rows.append(Outcome(entry.name, entry.tier, "not applied"))
    for c in current[len(series.entries):]:
        rows.append(Outcome("(not in series)", "", "only on branch", str(c.id)[:12], c.message.splitlines()[0]))
    return rows
