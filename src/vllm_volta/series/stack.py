"""Apply the series onto the upstream base as commits, and refresh it back from them."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pygit2
from pygit2.enums import ApplyLocation, FileStatus

from . import model, patchfile
from .upstream import BRANCH, BRANCH_REF, Progress, Upstream, materialize, open_upstream

BACKUP_PREFIX = "refs/volta/backup/"

APPLIED = "applied"
ALREADY = "already applied"
CONFLICT = "conflict"
PENDING = "not reached"
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


def chain(up: Upstream) -> list[pygit2.Commit]:
    """The commits of branch volta above the base, oldest first."""
    ref = up.repo.references.get(BRANCH_REF)
    if ref is None:
        return []
    commits = []
    commit = up.repo[ref.target]
    while commit.id != up.base.id:
        if len(commit.parents) != 1:
            raise StackError(
                f"branch {BRANCH} in {up.path} has {'a merge' if commit.parents else 'a root'} "
                f"commit {commit.short_id} above the base; a series is a straight line. "
                f"Rebase {BRANCH} onto {up.base.short_id} without merges, then run again."
            )
        commits.append(commit)
        commit = commit.parents[0]
    commits.reverse()
    return commits


def dirty_paths(repo: pygit2.Repository) -> list[str]:
    """Paths with uncommitted edits (untracked files that are not ignored count)."""
    return sorted(
        path
        for path, flags in repo.status().items()
        if flags != FileStatus.CURRENT and not flags & FileStatus.IGNORED
    )


def _refuse_dirty(up: Upstream, verb: str) -> None:
    dirty = dirty_paths(up.repo)
    if not dirty:
        return
    shown = "\n  ".join(dirty[:10]) + ("\n  ..." if len(dirty) > 10 else "")
    raise StackError(
        f"{up.path} has uncommitted edits; {verb} touches nothing until they are kept:\n  {shown}\n"
        f"To keep them as a patch: commit them on branch {BRANCH} in {up.path} (with the header "
        "fields, see docs/patches.md) and run `nox -s refresh`.\n"
        f"To set them aside: `git -C {up.path} stash -u`, run {verb}, then `git -C {up.path} stash pop`."
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
        repo.apply(patchfile.parse_diff(patch), ApplyLocation.BOTH)
        repo.index.write()
    tree = repo.index.write_tree()
    sig = patch.signature()
    return repo.create_commit(BRANCH_REF, sig, sig, patch.message, tree, [parent])


def apply(
    root: Path | str,
    *,
    tier: str | None = None,
    force: bool = False,
    progress: Progress = print,
) -> ApplyResult:
    """Make branch volta in upstream/ hold the series (up to ``tier``) as commits."""
    started = time.monotonic()
    root = Path(root)
    series = model.Series.load(root)
    wanted = series.upto(tier)
    up = materialize(root, progress)
    repo = up.repo
    _refuse_dirty(up, "apply")

    texts = {e.name: series.path_of(e).read_text(encoding="utf-8") for e in series.entries}
    patches = {e.name: patchfile.parse(texts[e.name], source=str(series.path_of(e))) for e in wanted}
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
            raise StackError(
                f"branch {BRANCH} in {up.path} has {len(unsaved)} commit(s) that are not in the "
                f"series (first: {first.short_id} {first.message.splitlines()[0]!r}). Nothing was "
                "changed.\nTo keep them: `nox -s refresh` writes them into patches/.\n"
                "To drop them: `nox -s apply -- --force` (the old tip is kept under "
                f"{BACKUP_PREFIX})."
            )
        backup = f"{BACKUP_PREFIX}{int(time.time())}"
        repo.references.create(backup, current[-1].id, force=True)
        keep = current[same - 1].id if same else up.base.id
        repo.references.create(BRANCH_REF, keep, force=True)
        repo.set_head(BRANCH_REF)
        repo.checkout(BRANCH_REF, strategy=pygit2.enums.CheckoutStrategy.FORCE)
        for c, i in zip(extra, range(same, same + len(extra))):
            if i < len(series.entries) and series.entries[i] not in wanted:
                outcomes.append(Outcome(series.entries[i].name, series.entries[i].tier, UNAPPLIED))
    else:
        repo.set_head(BRANCH_REF)

    todo = wanted[same:]
    for n, entry in enumerate(todo, start=same + 1):
        patch = patches[entry.name]
        if patch.diff and not repo.applies(patchfile.parse_diff(patch), ApplyLocation.INDEX):
            detail = _conflict_detail(repo, patch)
            outcomes.append(Outcome(entry.name, entry.tier, CONFLICT, detail=detail))
            outcomes.extend(Outcome(e.name, e.tier, PENDING) for e in todo[n - same :])
            good = wanted[n - 2].name if n > 1 else f"the base {up.base.short_id}"
            raise _ApplyConflict(
                ApplyResult(up, outcomes, time.monotonic() - started, backup),
                f"{entry.name} does not apply exactly: {detail}.\n"
                f"{up.path} is left at {good} (branch {BRANCH}), clean; nothing is lost.\n"
                f"To go on: make the change by hand in {up.path}, commit it with the patch's "
                f"message, commit the rest of the series on top (or fix patches/{entry.name}), "
                "then `nox -s refresh`; or correct the patch file and run `nox -s apply` again.",
            )
        oid = commit_patch(repo, patch)
        progress(f"[{n}/{len(wanted)}] applied {entry.name}")
        outcomes.append(Outcome(entry.name, entry.tier, APPLIED, str(oid)[:12]))
    return ApplyResult(up, outcomes, time.monotonic() - started, backup)


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

    @property
    def changed(self) -> list[str]:
        return [p for p, s in self.files if s != UNCHANGED]


def render(up: Upstream) -> tuple[list[tuple[str, str, str]], str]:
    """(name, tier, text) for each commit of the branch, and the series text."""
    rendered = []
    last_tier = 0
    for n, commit in enumerate(chain(up), start=1):
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
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def refresh(root: Path | str, *, progress: Progress = print) -> RefreshResult:
    """Rewrite patches/ and series/ from branch volta; only changed files are written."""
    started = time.monotonic()
    root = Path(root)
    up = open_upstream(root)
    if up is None:
        raise StackError(f"{root / 'upstream'} is not materialized; run `nox -s apply` first")
    dirty = dirty_paths(up.repo)
    if dirty:
        progress(
            f"warning: {len(dirty)} uncommitted path(s) in {up.path} are in no patch "
            f"(e.g. {dirty[0]}); commit them on {BRANCH} to include them"
        )
    rendered, series_text = render(up)
    files: list[tuple[str, str]] = []
    patch_dir = root / model.PATCH_DIR
    keep = {name for name, _, _ in rendered}
    for name, _, text in rendered:
        state = WRITTEN if _write_if_changed(patch_dir / name, text) else UNCHANGED
        files.append((f"{model.PATCH_DIR}/{name}", state))
    for stale in sorted(patch_dir.glob("*.patch")):
        if stale.name not in keep:
            stale.unlink()
            files.append((f"{model.PATCH_DIR}/{stale.name}", REMOVED))
    state = WRITTEN if _write_if_changed(root / model.SERIES_FILE, series_text) else UNCHANGED
    files.append((str(model.SERIES_FILE), state))
    return RefreshResult(files, time.monotonic() - started)


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
        if i < len(current):
            same = text is not None and patchfile.emit(patchfile.from_commit(up.repo, current[i])) == text
            rows.append(
                Outcome(entry.name, entry.tier, ALREADY if same else "differs from branch", str(current[i].id)[:12])
            )
        else:
            rows.append(Outcome(entry.name, entry.tier, "not applied"))
    for c in current[len(series.entries):]:
        rows.append(Outcome("(not in series)", "", "only on branch", str(c.id)[:12], c.message.splitlines()[0]))
    return rows
