"""Replay the series onto another upstream and say what happened to each patch.

``refresh --onto <ref or version>`` cherry-picks every commit of branch
``volta`` (the series, as ``apply`` makes it) onto a new base with a real
3-way merge (libgit2's ``merge_trees``: ancestor = the patch's old parent,
ours = the replayed tip, theirs = the patch) and classifies it:

- clean: the files it touches are as it expects them (preimage unchanged);
- merged: upstream moved, the merge went through without a conflict;
- obsolete: the merge adds nothing, the change is upstream already (it is
  left out of the replay; a candidate to drop);
- conflict: files and hunks that collide with upstream's edits;
- missing target: a file the patch changes is gone upstream.

The replay is built on branch ``volta-onto``; ``volta``, ``refs/volta/base``,
patches/, series/ and pin.toml stay as they are until ``--accept``. A
conflict stops the replay with the markers in upstream/'s work tree
(``--continue`` commits the resolution with the patch's message and author);
``--abort`` puts upstream/ back on ``volta``. The old tip and base are kept
under ``refs/volta/pre-onto/<stamp>/``. State lives in
upstream/.git/volta-rebase/ (state.json, report.md).

Dry runs (``upstream-report``, ``refresh --onto X --dry-run``) classify
every patch and go on past a conflict without that patch; they write only
objects and ``refs/volta/upstream/<version>`` into upstream/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pygit2
from packaging.version import InvalidVersion, Version
from pygit2.enums import FileMode

from . import backup as backup_mod
from . import faults, guard, merge, model, patchfile, releases, stack, upstream, worktree
from .upstream import BASE_REF, BRANCH, BRANCH_REF, Progress, Upstream

CLEAN = "clean"
MERGED = "merged"
OBSOLETE = "obsolete"
CONFLICT = "conflict"
MISSING = "missing target"
PENDING = "not reached"
CLASSES = (CLEAN, MERGED, OBSOLETE, CONFLICT, MISSING)
STOPS = (CONFLICT, MISSING)

ONTO_BRANCH = "volta-onto"
ONTO_REF = f"refs/heads/{ONTO_BRANCH}"
PRE_ONTO_PREFIX = "refs/volta/pre-onto/"
STATE_DIR = "volta-rebase"
STATE_FORMAT = 1

SOURCE_REF = "ref"
SOURCE_SDIST = "sdist"

COLUMNS = ("#", "patch", "tier", "class", "files", "detail")

_VERSION_RE = re.compile(r"^v?(\d+(?:\.\d+)+)$")


class RebaseError(RuntimeError):
    """The replay cannot start or go on; the message says why and what to do."""


# ----------------------------------------------------------------------
# what is replayed onto


@dataclasses.dataclass(frozen=True)
class Target:
    spec: str  # what --onto named
    source: str  # SOURCE_REF or SOURCE_SDIST
    base: str  # the new base commit id, in upstream/
    ref: str  # the ref that names it in upstream/
    version: str  # "" when not known (a plain git ref)
    git_commit: str  # the git commit (ref targets); "" for an sdist import
    release: dict | None = None  # releases.Release fields (sdist targets)

    @property
    def label(self) -> str:
        return f"vLLM {self.version}" if self.version else self.spec

    def describe(self) -> str:
        if self.source == SOURCE_SDIST:
            r = self.release or {}
            return (
                f"vLLM {self.version}: PyPI sdist {r.get('filename')} ({int(r.get('size', 0)):,} bytes, "
                f"sha256 {r.get('sha256')} as the index lists it, verified), imported as base commit "
                f"{self.base} ({self.ref})"
            )
        return f"{self.spec}: git commit {self.base} in upstream/ ({self.ref})"


def _peel(repo: pygit2.Repository, spec: str) -> tuple[pygit2.Commit, str] | None:
    try:
        obj, ref = repo.resolve_refish(spec)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        try:
            obj, ref = repo.revparse_single(spec), None
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            return None
    try:
        commit = obj.peel(pygit2.Commit)
    except (pygit2.GitError, ValueError, TypeError):
        return None
    return commit, (ref.name if ref is not None else str(commit.id))


def version_of(spec: str) -> str:
    m = _VERSION_RE.match(spec.strip())
    return m.group(1) if m else ""


def resolve(root: Path, up: Upstream, spec: str, progress: Progress = print) -> Target:
    """The base commit ``spec`` names: a ref of upstream/, else that version's PyPI sdist."""
    repo = up.repo
    version = version_of(spec)
    found = _peel(repo, spec)
    if found is None and version:
        found = _peel(repo, f"refs/tags/v{version}")
    if found is not None:
        commit, ref = found
        if ref.startswith(upstream.UPSTREAM_REF_PREFIX) and version:
            return _sdist_target(root, up, releases.find(version, progress=progress), progress, spec=spec)
        if not version:
            m = _VERSION_RE.match(ref.rsplit("/", 1)[-1])
            version = m.group(1) if m else ""
        progress(f"onto: {ref} in {up.path} (commit {commit.id})")
        return Target(spec, SOURCE_REF, str(commit.id), ref, version, str(commit.id))
    if not version:
        raise RebaseError(
            f"{spec!r} is neither a ref of {up.path} nor a version number; name a tag, branch or "
            "commit of the upstream/ submodule, or a vLLM release such as 0.10.0"
        )
    return _sdist_target(root, up, releases.find(version, progress=progress), progress, spec=spec)


def _sdist_target(root: Path, up: Upstream, rel: releases.Release, progress: Progress, *, spec: str = "") -> Target:
    pin = upstream.Pin.load(root)
    rpin = release_pin(pin, rel)
    ref = upstream.release_ref(rel.version)
    existing = up.repo.references.get(ref)
    if existing is not None:
        commit = up.repo[existing.target]
        if commit.message == upstream.base_message(rpin) and commit.author == upstream.base_signature(rpin):
            progress(f"onto: vLLM {rel.version}, imported before ({ref} = {commit.id})")
            return _target_of(rel, str(commit.id), ref, spec)
        progress(f"onto: {ref} does not match the index's {rel.filename}; importing it again")
    path = upstream.fetch_sdist(rpin, progress)
    progress(f"onto: importing {rel.filename} into {up.path} as {ref}")
    oid = upstream.import_base(up.repo, path, rpin, ref)
    return _target_of(rel, str(oid), ref, spec)


def _target_of(rel: releases.Release, base: str, ref: str, spec: str) -> Target:
    return Target(spec or rel.version, SOURCE_SDIST, base, ref, rel.version, "", dataclasses.asdict(rel))


def release_pin(pin: upstream.Pin, rel: releases.Release, commit: str = "") -> upstream.Pin:
    return upstream.release_pin(
        pin, version=rel.version, filename=rel.filename, size=rel.size, sha256=rel.sha256,
        date=rel.import_date, commit=commit,
    )


# ----------------------------------------------------------------------
# one patch: merge and classify


@dataclasses.dataclass
class Step:
    klass: str
    files: list[str]
    detail: str
    tree: pygit2.Oid | None = None  # the merged tree (clean, merged)
    paths: list[str] = dataclasses.field(default_factory=list)  # conflicted paths


def _entry(tree: pygit2.Tree, path: str) -> tuple[str, int] | None:
    try:
        e = tree[path]
    except KeyError:
        return None
    return (str(e.id), e.filemode)


def classify(repo: pygit2.Repository, tip: pygit2.Commit, old: pygit2.Commit) -> Step:
    """Cherry-pick ``old`` onto ``tip`` in memory and say how it went."""
    anc, ours, theirs = old.parents[0].tree, tip.tree, old.tree
    diff = repo.diff(anc, theirs, context_lines=patchfile.CONTEXT_LINES)
    deltas = [(d.status_char(), d.old_file.path, d.new_file.path) for d in diff.deltas]
    files = [p if o == p else f"{o} -> {p}" for _, o, p in deltas]
    if not deltas:
        return Step(CLEAN, [], "empty patch: nothing to replay", ours.id)
    index = merge.merge_trees(repo, anc, ours, theirs)  # follows renames as git does (merge.py)
    conflicts = list(index.conflicts) if index.conflicts is not None else []
    if conflicts:
        missing, details, paths = [], [], []
        with tempfile.TemporaryDirectory(prefix="volta-hunks-") as scratch_dir:
            scratch = pygit2.init_repository(scratch_dir, bare=True)
            for a, o, t in conflicts:
                path = (a or o or t).path
                paths.append(path)
                if o is None and a is not None and t is not None:
                    missing.append(path)
                    details.append(f"{path}: gone upstream (the patch changes it)")
                else:
                    details.append(_conflict_detail(repo, scratch, diff, path, a, o, t))
        return Step(MISSING if missing else CONFLICT, files, "; ".join(details), None, paths)
    tree = index.write_tree(repo)
    if tree == ours.id:
        return Step(OBSOLETE, files, "the change is already upstream (the merge adds nothing): candidate to drop", None)
    notes, exact = [], True
    for status, old_path, new_path in deltas:
        before, mine, now = _entry(anc, old_path), _entry(theirs, new_path), _entry(ours, new_path)
        if status == "A":
            if now is None:
                continue
            exact = False
            notes.append(f"{new_path}: already upstream" if now == mine else f"{new_path}: added upstream too, merged")
        elif status == "D":
            now = _entry(ours, old_path)
            if now != before:
                exact = False
                notes.append(f"{old_path}: already gone upstream" if now is None else f"{old_path}: changed upstream")
        elif now == before:
            continue
        else:
            exact = False
            if now is None:
                notes.append(f"{old_path}: moved upstream; the merge followed it")
            elif now == mine:
                notes.append(f"{new_path}: already upstream")
            else:
                notes.append(f"{new_path}: changed upstream ({_churn(repo, before, now)}), merged")
    if exact:
        return Step(CLEAN, files, "applies exactly (preimage unchanged)", tree)
    return Step(MERGED, files, "; ".join(notes), tree)


def _churn(repo: pygit2.Repository, before: tuple[str, int] | None, now: tuple[str, int]) -> str:
    """How much upstream changed a file: '+added -deleted' lines."""
    if before is None:
        return "new"
    old_blob, new_blob = repo[before[0]], repo[now[0]]
    if old_blob.is_binary or new_blob.is_binary:
        return "binary"
    _, added, deleted = old_blob.diff(new_blob).line_stats
    return f"+{added} -{deleted} lines"


_FIXED_RE = re.compile(r"fixed upstream in v?(\d+(?:\.\d+)+)", re.IGNORECASE)


def status_hint(old: pygit2.Commit, version: str) -> str:
    """A note when the patch's Upstream-Status says the target release has the fix."""
    status = patchfile.parse_trailers(old.message.partition("\n")[2]).get("Upstream-Status", "")
    m = _FIXED_RE.search(status)
    if not (m and version):
        return ""
    try:
        if Version(m.group(1)) > Version(version):
            return ""
    except InvalidVersion:
        return ""
    return f"Upstream-Status says fixed upstream in v{m.group(1)}: check its Drop-When"


def _conflict_detail(repo, scratch, diff, path, a, o, t) -> str:
    if a is None:
        return f"{path}: added by the patch and, differently, by upstream"
    if t is None:
        return f"{path}: the patch deletes it; upstream changed it"
    anc_blob, our_blob = repo[a.id], repo[o.id]
    if anc_blob.is_binary or our_blob.is_binary:
        return f"{path}: binary, changed on both sides"
    hunks = next((p.hunks for p in diff if p.delta.new_file.path == path), [])
    anc_lines = anc_blob.data.splitlines(keepends=True)
    a_entry = pygit2.IndexEntry(path, scratch.create_blob(anc_blob.data), a.mode)
    o_entry = pygit2.IndexEntry(path, scratch.create_blob(our_blob.data), o.mode)
    bad = []
    for hunk in hunks:
        new_side = [ln.raw_content for ln in hunk.lines if ln.origin in (" ", "+")]
        at = hunk.old_start - 1 if hunk.old_lines else hunk.old_start
        only = b"".join(anc_lines[:at] + new_side + anc_lines[at + hunk.old_lines:])
        t_entry = pygit2.IndexEntry(path, scratch.create_blob(only), t.mode)
        if not scratch.merge_file_from_index(a_entry, o_entry, t_entry).automergeable:
            bad.append(hunk.header.split(" @@", 1)[0] + " @@")
    if bad:
        return f"{path}: hunk {', '.join(bad)} collides with upstream's edits"
    return f"{path}: the hunks collide with upstream's edits only together"


# ----------------------------------------------------------------------
# the series, replayed


@dataclasses.dataclass
class Row:
    number: int
    name: str
    tier: str
    klass: str
    files: list[str]
    detail: str
    commit: str = ""  # the replayed commit (short id)

    def cells(self) -> tuple[str, ...]:
        return (f"{self.number:04d}", self.name, self.tier, self.klass, ", ".join(self.files), self.detail)


@dataclasses.dataclass
class Report:
    title: str
    old: str  # the pinned upstream, in words
    onto: Target
    rows: list[Row]
    mode: str  # "dry run", "replay stopped at ...", "replay complete", ...
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.mode.startswith("replay stopped")

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in CLASSES}
        for r in self.rows:
            out[r.klass] = out.get(r.klass, 0) + 1
        return {k: v for k, v in out.items() if v}

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counts().items()) or "no patches"

    def markdown(self, level: int = 1) -> str:
        from .. import report

        h = "#" * level
        tiers = {}
        for r in self.rows:
            tiers[r.tier] = tiers.get(r.tier, 0) + 1
        head = [
            f"{h} {self.title}",
            "",
            f"- from: {self.old}",
            f"- onto: {self.onto.describe()}",
            f"- series: {len(self.rows)} patches"
            + (f" ({', '.join(f'{t} {n}' for t, n in tiers.items())})" if tiers else ""),
            f"- result: {self.summary()}",
            f"- mode: {self.mode}",
        ]
        head += [f"- {n}" for n in self.notes]
        return "\n".join(head) + "\n\n" + report.markdown(COLUMNS, (r.cells() for r in self.rows))


def _commit(repo: pygit2.Repository, old: pygit2.Commit, tree: pygit2.Oid, parent: pygit2.Oid) -> pygit2.Oid:
    # Committer = author, as apply does: the replayed ids depend on content only.
    return repo.create_commit(None, old.author, old.author, old.message, tree, [parent])


def replay(
    repo: pygit2.Repository,
    entries: list[model.Entry],
    olds: list[pygit2.Commit],
    tip: pygit2.Commit,
    *,
    stop: bool,
    first: int = 1,
    version: str = "",
    progress: Progress = print,
) -> tuple[list[Row], pygit2.Commit, int | None]:
    """Cherry-pick ``olds`` onto ``tip`` in memory (objects only, no refs).

    Returns the rows, the new tip and, when ``stop`` and a patch conflicts,
    the position (in ``olds``) it stopped at; without ``stop`` a conflicting
    patch is left out and the next one goes on without it.
    """
    rows: list[Row] = []
    skipped: list[tuple[str, set[str]]] = []
    for i, (entry, old) in enumerate(zip(entries, olds)):
        number = first + i
        step = classify(repo, tip, old)
        row = Row(number, entry.name, entry.tier, step.klass, step.files, step.detail)
        hint = status_hint(old, version)
        if hint and step.klass != OBSOLETE:
            row.detail += f"; {hint}"
        touched = {p.split(" -> ")[-1] for p in step.files} | {p.split(" -> ")[0] for p in step.files}
        shared = [n for n, paths in skipped if paths & touched]
        if shared:
            they = "it touches" if len(shared) == 1 else "they touch"
            row.detail += f" (replayed without {', '.join(shared)}: {they} the same files)"
        if step.klass in (CLEAN, MERGED):
            tip = repo[_commit(repo, old, step.tree, tip.id)]
            row.commit = str(tip.id)[:12]
        elif step.klass == OBSOLETE:
            pass
        elif stop:
            rows.append(row)
            progress(f"[{number}] {entry.name}: {step.klass}")
            return rows, tip, i
        else:
            row.detail += "; left out, the dry run goes on without it"
            skipped.append((f"{number:04d}", touched))
        progress(f"[{number}] {entry.name}: {step.klass}")
        rows.append(row)
    return rows, tip, None


def series_commits(root: Path, up: Upstream, progress: Progress = print) -> tuple[list[model.Entry], list[pygit2.Commit]]:
    """The series entries and their commits on branch volta (applying the series first when needed)."""
    series = model.Series.load(root)
    texts = [series.path_of(e).read_text(encoding="utf-8") for e in series.entries]

    def held() -> list[pygit2.Commit] | None:
        current = stack.chain(up)
        if len(current) != len(texts):
            return None
        for c, text in zip(current, texts):
            if patchfile.emit(patchfile.from_commit(up.repo, c)) != text:
                return None
        return current

    current = held()
    if current is None:
        progress(f"branch {BRANCH} does not hold the series; applying it first")
        stack.apply(root, progress=progress)
        current = held()
        if current is None:
            raise RebaseError(f"branch {BRANCH} in {up.path} still does not hold the series after apply")
    return list(series.entries), current


def _old_words(root: Path, up: Upstream) -> str:
    pin = upstream.Pin.load(root)
    how = "PyPI sdist import" if up.source == upstream.SOURCE_SDIST else "git submodule"
    return f"vLLM {pin.version}, base commit {up.base.id} ({how})"


# ----------------------------------------------------------------------
# dry runs


def dry_run(root: Path | str, onto: str, *, progress: Progress = print) -> Report:
    """Classify every patch of the series onto ``onto``; change nothing but objects and import refs."""
    root = Path(root)
    with guard.checkout(root, progress):
        up = upstream.materialize(root, progress)
        entries, olds = series_commits(root, up, progress)
        target = resolve(root, up, onto, progress)
        return _dry(root, up, entries, olds, target, progress)


def _dry(root, up, entries, olds, target: Target, progress) -> Report:
    rows, _, _ = replay(up.repo, entries, olds, up.repo[target.base], stop=False, version=target.version,
                        progress=progress)
    skipped = [f"{r.number:04d}" for r in rows if r.klass in STOPS]
    notes = []
    if skipped:
        notes.append(
            f"after a conflict the dry run went on without that patch: {', '.join(skipped)} left out, "
            "so later patches were replayed without them"
        )
    return Report(f"vllm-volta series onto {target.label} (dry run)", _old_words(root, up), target, rows, "dry run", notes)


def upstream_report(
    root: Path | str,
    *,
    count: int = 3,
    versions: list[str] | None = None,
    progress: Progress = print,
) -> list[Report]:
    """A dry run of the series on each of the newest ``count`` releases (or on ``versions``)."""
    root = Path(root)
    with guard.checkout(root, progress):
        up = upstream.materialize(root, progress)
        entries, olds = series_commits(root, up, progress)
        wanted = ([releases.find(v, progress=progress) for v in versions] if versions
                  else releases.newest(count, progress=progress))
        reports = []
        for rel in wanted:
            progress(f"upstream-report: vLLM {rel.version}")
            target = _sdist_target(root, up, rel, progress, spec=rel.version)
            reports.append(_dry(root, up, entries, olds, target, progress))
        return reports


def upstream_markdown(reports: list[Report]) -> str:
    from .. import report

    out = ["# vllm-volta series on the newest vLLM releases (dry runs)", ""]
    if reports:
        out.append(f"From {reports[0].old}. One dry run per release: every patch is cherry-picked with a "
                   "3-way merge and classified; after a conflict the run goes on without that patch.")
        out.append("")
        names = [(r.number, r.name, r.tier) for r in reports[0].rows]
        cols = ("#", "patch", "tier", *(rep.onto.label for rep in reports))
        matrix = [
            (f"{n:04d}", name, tier, *(rep.rows[i].klass for rep in reports))
            for i, (n, name, tier) in enumerate(names)
        ]
        out.append(report.markdown(cols, matrix))
        out.append("| release | result |\n|---|---|")
        out += [f"| {rep.onto.label} | {rep.summary()} |" for rep in reports]
        out.append("")
    for rep in reports:
        out.append(rep.markdown(level=2))
    return "\n".join(out)


# ----------------------------------------------------------------------
# the replay proper: start, continue, abort, accept


def state_dir(up: Upstream) -> Path:
    return Path(up.repo.path) / STATE_DIR


def report_path(up: Upstream) -> Path:
    return state_dir(up) / "report.md"


def _state_file(up: Upstream) -> Path:
    return state_dir(up) / "state.json"


def load_state(up: Upstream) -> dict | None:
    path = _state_file(up)
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != STATE_FORMAT:
        raise RebaseError(f"{path}: written by another version of the engine; `--abort` and start again")
    return state


def in_progress(root: Path | str) -> dict | None:
    """The state of a replay in progress in root/upstream, or None."""
    up = upstream.open_upstream(Path(root))
    return load_state(up) if up is not None else None


def _save_state(up: Upstream, state: dict) -> None:
    path = _state_file(up)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    faults.point("save state.json")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _need_state(root: Path) -> tuple[Upstream, dict]:
    up = upstream.open_upstream(root)
    state = load_state(up) if up is not None else None
    if state is None:
        raise RebaseError("no replay is in progress; start one with `nox -s refresh -- --onto <ref or version>`")
    return up, state


def _refuse_dirty(up: Upstream, verb: str) -> None:
    dirty = stack.dirty_paths(up.repo)
    if dirty:
        shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise RebaseError(
            f"{up.path} has uncommitted edits ({shown}); {verb} touches nothing until they are kept: "
            + (f"`nox -s apply -- --force` keeps them as a commit it names, or commit them on a branch of {up.path}"
               if verb == "refresh --onto" else
               f"commit them on a branch of your own in {up.path} (`git -C {up.path} switch -c mine && git -C "
               f"{up.path} commit -a`), or remove them, then run {verb} again")
        )


def _report_of(up: Upstream, state: dict) -> Report:
    rows = [Row(**r) for r in state["rows"]]
    entries = state["entries"]
    forecast = state.get("forecast", [])
    for e in entries[len(rows):]:
        fc = forecast[e["number"] - 1] if e["number"] - 1 < len(forecast) else ""
        rows.append(Row(e["number"], e["name"], e["tier"], PENDING, [], f"dry run: {fc}" if fc else ""))
    target = Target(**state["onto"])
    if state["stopped"] is not None:
        stopped = entries[state["stopped"]["index"]]
        mode = (
            f"replay stopped at {stopped['name']} ({rows[state['stopped']['index']].klass}); resolve it in "
            f"{up.path}, then `nox -s refresh -- --continue` (or `--abort`)"
        )
    else:
        mode = (
            f"replay complete on branch {ONTO_BRANCH} ({state['tip']}); test it, then "
            "`nox -s refresh -- --accept` moves the pin and rewrites patches/ (or `--abort`)"
        )
    notes = [f"the state before the replay is kept as {state['backup']}/volta and {state['backup']}/base"]
    notes += state.get("notes", [])
    return Report(f"vllm-volta series onto {target.label}", state["old"], target, rows, mode, notes)


def _write_report(up: Upstream, state: dict) -> Report:
    rep = _report_of(up, state)
    path = report_path(up)
    path.parent.mkdir(parents=True, exist_ok=True)
    faults.point("write report.md")
    path.write_text(rep.markdown(), encoding="utf-8")
    return rep


# How a replay moves (state.json is the journal): each step first works out its
# result in objects only, records it in state.json with "sync": true, then
# brings refs, the index and the work tree to what the state says (_sync). A
# run killed anywhere leaves a state that the next --continue (or the same
# --onto) finishes: _sync depends only on the state, not on how far the
# killed run got.


def _complete(state: dict) -> bool:
    return (
        state["stopped"] is None
        and not state.get("sync")
        and state["next"] >= len(state["entries"])
        and len(state["rows"]) == len(state["entries"])
    )


def _interrupted(state: dict) -> bool:
    return bool(state.get("sync")) or (state["stopped"] is None and state["next"] < len(state["entries"]))


def _left_trees(repo: pygit2.Repository, state: dict) -> list[pygit2.Tree]:
    """The trees the work tree may hold pieces of: the last synced tip, the tip, a stopped pick."""
    ids = [state.get("synced") or state["old_tip"], state["tip"], state["old_tip"]]
    stopped = state.get("stopped") or state.get("picked")
    if stopped:
        ids.append(state["entries"][stopped["index"]]["commit"])
    trees = []
    for oid in dict.fromkeys(i for i in ids if i):
        try:
            trees.append(repo[oid].peel(pygit2.Tree))
        except (KeyError, ValueError):
            continue
    return trees


def _sync(up: Upstream, state: dict, progress: Progress) -> None:
    """Make branch volta-onto, HEAD, the index and the work tree what ``state`` says."""
    repo = up.repo
    worktree.clear_stale_lock(repo, progress)
    tip = repo[state["tip"]]
    faults.point("state cleanup")
    repo.state_cleanup()
    faults.point("move volta-onto")
    repo.references.create(ONTO_REF, tip.id, force=True)
    faults.point("HEAD to volta-onto")
    repo.set_head(ONTO_REF)
    progress(f"checking out {ONTO_BRANCH} at {tip.short_id} in {up.path}")
    worktree.switch(repo, tip.tree, leaving=_left_trees(repo, state))
    stopped = state["stopped"]
    if stopped is not None:
        old = repo[state["entries"][stopped["index"]]["commit"]]
        stopped["paths"] = _pick(repo, tip, old)
        state["picked"] = {"index": stopped["index"]}
    else:
        state.pop("picked", None)
    state["synced"] = str(tip.id)
    state["sync"] = False
    _save_state(up, state)


def _pick(repo: pygit2.Repository, tip: pygit2.Commit, old: pygit2.Commit) -> list[str]:
    """Leave the stopped patch's merge onto ``tip`` in the work tree, as `git cherry-pick` would.

    The same merge the classification made (merge.py: renames followed, patience
    diff), not libgit2's cherrypick, whose defaults differ: merged files
    written, conflict markers where the merge collides, the patch's version of a
    file gone upstream. The index stays at ``tip``; CHERRY_PICK_HEAD and
    MERGE_MSG are written so that `git cherry-pick --continue` works too.
    Returns the conflicted paths.
    """
    work = Path(repo.workdir)
    index = merge.merge_trees(repo, old.parents[0].tree, tip.tree, old.tree)
    conflicts = list(index.conflicts or [])
    clean = {e.path: (e.id, e.mode) for e in index}
    conflicted = {(o or t or a).path for a, o, t in conflicts}
    for path in sorted(set(worktree.blobs(tip.tree)) - set(clean) - conflicted):
        if (work / path).exists():
            faults.point(f"pick: remove {path}")
            (work / path).unlink()
    for path, (oid, mode) in sorted(clean.items()):
        if worktree._on_disk(work, path, mode) != oid:
            faults.point(f"pick: write {path}")
            worktree._write(repo, work, path, oid, mode)
    for a, o, t in conflicts:
        if o is not None and t is not None:
            result = repo.merge_file_from_index(a, o, t)
            blob = repo.create_blob(result.contents.encode("utf-8", "surrogateescape")
                                    if isinstance(result.contents, str) else result.contents)
            faults.point(f"pick: markers {o.path}")
            worktree._write(repo, work, o.path, blob, o.mode)
        elif t is not None:  # gone upstream: the patch's version, to resolve
            faults.point(f"pick: write {t.path}")
            worktree._write(repo, work, t.path, t.id, t.mode)
    faults.point("pick: CHERRY_PICK_HEAD")
    git = Path(repo.path)
    (git / "MERGE_MSG").write_text(old.message, encoding="utf-8")
    (git / "CHERRY_PICK_HEAD").write_text(f"{old.id}\n", encoding="utf-8")
    return sorted(conflicted | {p for a, o, t in conflicts for p in ((a and a.path), (t and t.path)) if p})


def _advance(up: Upstream, state: dict, progress: Progress) -> Report:
    """Replay from state['next'] until the end or a stop, syncing after each step."""
    repo = up.repo
    entries = state["entries"]
    while True:
        if state.get("sync"):
            _sync(up, state, progress)
        if state["stopped"] is not None or state["next"] >= len(entries):
            break
        todo = entries[state["next"]:]
        names = [model.Entry(e["name"], e["tier"], 0) for e in todo]
        olds = [repo[e["commit"]] for e in todo]
        tip = repo[state["tip"]]
        rows, new_tip, stopped = replay(repo, names, olds, tip, stop=True, first=state["next"] + 1,
                                        version=state["onto"]["version"], progress=progress)
        state["rows"] = state["rows"][: state["next"]] + [dataclasses.asdict(r) for r in rows]
        state["tip"] = str(new_tip.id)
        if stopped is None:
            state["next"] = len(entries)
        else:
            state["next"] += stopped
            state["stopped"] = {"index": state["next"], "tip": str(new_tip.id), "paths": []}
        state["sync"] = True
        _save_state(up, state)
    rep = _write_report(up, state)
    if state["stopped"] is not None and not state["stopped"].get("shown"):
        # Only now has the user been told to resolve it: before this, a --continue
        # must not take the work tree for a resolution.
        state["stopped"]["shown"] = True
        _save_state(up, state)
    return rep


def start(root: Path | str, onto: str, *, progress: Progress = print) -> Report:
    """Replay the series onto ``onto`` on branch volta-onto; stop at the first conflict.

    Run again after an interruption, with the same ``onto``, it finishes the replay.
    """
    root = Path(root)
    with guard.checkout(root, progress):
        up = upstream.materialize(root, progress)
        existing = load_state(up)
        if existing is not None:
            if existing["onto"]["spec"] == onto or version_of(onto) and existing["onto"]["version"] == version_of(onto):
                if _interrupted(existing):
                    progress(f"resuming the replay onto {existing['onto']['spec']} an interrupted run left")
                return _advance(up, existing, progress)  # nothing left to do: just the report again
            raise RebaseError(
                f"a replay onto {existing['onto']['spec']} is in progress in {up.path}; "
                "`--continue`, `--accept` or `--abort` it first"
            )
        _refuse_dirty(up, "refresh --onto")
        entries, olds = series_commits(root, up, progress)
        _refuse_dirty(up, "refresh --onto")
        target = resolve(root, up, onto, progress)
        repo = up.repo
        forecast = _dry(root, up, entries, olds, target, lambda *_: None)
        old_tip = olds[-1] if olds else up.base
        backup = f"{PRE_ONTO_PREFIX}{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        faults.point("backup refs")
        repo.references.create(f"{backup}/volta", old_tip.id, force=True)
        repo.references.create(f"{backup}/base", up.base.id, force=True)
        series = model.Series.load(root)
        state = {
            "format": STATE_FORMAT,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "onto": dataclasses.asdict(target),
            "old": _old_words(root, up),
            "old_base": str(up.base.id),
            "old_tip": str(old_tip.id),
            "backup": backup,
            "series_digest": series.digest(),
            "pin_sha256": _sha256(root / upstream.PIN_FILE),
            "entries": [
                {"number": i, "name": e.name, "tier": e.tier, "commit": str(c.id)}
                for i, (e, c) in enumerate(zip(entries, olds), start=1)
            ],
            "forecast": [r.klass for r in forecast.rows],
            "rows": [],
            "next": 0,
            "stopped": None,
            "tip": target.base,
            "synced": str(old_tip.id),
            "sync": True,
            "notes": [],
        }
        _save_state(up, state)  # from here on, --abort can put everything back
        return _advance(up, state, progress)


def _markers(path: Path) -> int:
    """The line number of the first conflict marker in ``path`` (0: none)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return 0
    for n, line in enumerate(data.splitlines(), start=1):
        if line.startswith((b"<<<<<<< ", b">>>>>>> ")):
            return n
    return 0


def _resolution_tree(up: Upstream, paths: list[str]) -> pygit2.Oid:
    """The work tree as the resolution (`git add -A`), refusing leftover markers.

    Written as objects only: neither the index nor the work tree changes.
    """
    repo, work = up.repo, Path(up.repo.workdir)
    index = repo.index
    index.read()
    conflicted = {(a or o or t).path for a, o, t in (index.conflicts or [])}
    left = [(p, _markers(work / p)) for p in sorted(conflicted | set(paths))]
    left = [(p, n) for p, n in left if n]
    if left:
        raise RebaseError(
            "conflict markers are still in " + ", ".join(f"{p} (line {n})" for p, n in left)
            + f" in {up.path}; edit them away, then `nox -s refresh -- --continue` again"
        )
    base = repo[repo.head.target].tree
    scratch = pygit2.Index()
    scratch.read_tree(base)
    for path in sorted(set(stack.dirty_paths(repo)) | conflicted):
        p = work / path
        if p.is_symlink():
            scratch.add(pygit2.IndexEntry(path, repo.create_blob(os.readlink(p).encode()), FileMode.LINK))
        elif p.is_file():
            mode = FileMode.BLOB_EXECUTABLE if p.stat().st_mode & 0o100 else FileMode.BLOB
            scratch.add(pygit2.IndexEntry(path, repo.create_blob_fromdisk(str(p)), mode))
        elif path in scratch:
            scratch.remove(path)
    return scratch.write_tree(repo)


def cont(root: Path | str, *, progress: Progress = print) -> Report:
    """Commit the maintainer's resolution of the stopped patch and replay the rest."""
    root = Path(root)
    with guard.checkout(root, progress):
        return _cont(root, progress)


def _cont(root: Path, progress: Progress) -> Report:
    up, state = _need_state(root)
    if _interrupted(state) or state["stopped"] is not None and not state["stopped"].get("shown"):
        progress("finishing what an interrupted run of the replay left")
        return _advance(up, state, progress)
    stopped = state["stopped"]
    if stopped is None:
        raise RebaseError(
            f"the replay onto {state['onto']['spec']} is complete; nothing to continue. "
            "`nox -s refresh -- --accept` moves the pin, `--abort` drops the replay"
        )
    repo = up.repo
    entry = state["entries"][stopped["index"]]
    old = repo[entry["commit"]]
    stop_tip = repo[stopped["tip"]]
    branch = repo.references.get(ONTO_REF)
    head = repo[branch.target] if branch is not None else None
    if head is None or repo.head_is_detached or repo.head.name != ONTO_REF:
        raise RebaseError(
            f"{up.path} is not on branch {ONTO_BRANCH}; check it out (`git -C {up.path} checkout "
            f"{ONTO_BRANCH}`) and run --continue again, or --abort"
        )
    if head.id != stop_tip.id:
        # The maintainer committed the resolution (git commit / git cherry-pick --continue).
        if len(head.parents) != 1 or head.parents[0].id != stop_tip.id:
            raise RebaseError(
                f"branch {ONTO_BRANCH} moved by more than one commit since the stop at "
                f"{stop_tip.short_id}; reset it to {stop_tip.short_id} plus one commit (the resolution "
                "of the stopped patch), or --abort"
            )
        _refuse_dirty(up, "--continue")
        tree = head.tree.id
        progress(f"--continue: taking the resolution committed as {head.short_id}")
    else:
        tree = _resolution_tree(up, stopped.get("paths", []))
    row = state["rows"][stopped["index"]]
    if tree == stop_tip.tree.id:
        row["detail"] += "; resolved to no change: left out of the replay"
        tip = stop_tip
    else:
        tip = repo[_commit(repo, old, tree, stop_tip.id)]
        row["commit"] = str(tip.id)[:12]
        row["detail"] += f"; resolved by hand as {tip.short_id}"
    progress(f"[{entry['number']}] {entry['name']}: resolution committed")
    state["tip"] = str(tip.id)
    state["synced"] = str(head.id) if head.id != stop_tip.id else state.get("synced")
    state["next"] = stopped["index"] + 1
    state["stopped"] = None
    state["sync"] = True
    _save_state(up, state)  # the resolution is in a commit now; the work tree can be rewritten
    return _advance(up, state, progress)


def abort(root: Path | str, *, progress: Progress = print) -> str:
    """Drop the replay: upstream/ back on branch volta, as before --onto. Returns what was kept.

    An unfinished resolution in the work tree is kept as a commit first.
    Run again after an interruption, it finishes.
    """
    root = Path(root)
    with guard.checkout(root, progress):
        return _abort(root, progress)


def _abort(root: Path, progress: Progress) -> str:
    up, state = _need_state(root)
    repo = up.repo
    worktree.clear_stale_lock(repo, progress)
    backup = state["backup"]
    kept = [f"{backup}/volta"]
    if not state.get("aborting"):
        branch = repo.references.get(ONTO_REF)
        if branch is not None and str(branch.target) != state["onto"]["base"]:
            faults.point("keep the replay")
            repo.references.create(f"{backup}/replay", branch.target, force=True)
        if state["stopped"] is not None and not state.get("sync") and stack.dirty_paths(repo):
            worktree.snapshot(repo, f"{backup}/unfinished",
                              "the work tree of an unfinished conflict resolution, kept by --abort\n")
        state["aborting"] = True
        _save_state(up, state)
    if repo.references.get(f"{backup}/replay") is not None:
        kept.append(f"the dropped replay as {backup}/replay")
    if repo.references.get(f"{backup}/unfinished") is not None:
        kept.append(f"the unfinished resolution as {backup}/unfinished")
    faults.point("state cleanup")
    repo.state_cleanup()
    volta = repo[repo.references[BRANCH_REF].target]
    leaving = _left_trees(repo, state)
    faults.point("HEAD to volta")
    repo.set_head(BRANCH_REF)
    worktree.switch(repo, volta.tree, leaving=leaving, also_remove=(state.get("stopped") or {}).get("paths", []))
    branch = repo.references.get(ONTO_REF)
    if branch is not None:
        faults.point("delete volta-onto")
        branch.delete()
    faults.point("remove state.json")
    report = report_path(up)
    _state_file(up).unlink(missing_ok=True)
    report.unlink(missing_ok=True)
    words = ", ".join(kept)
    progress(f"--abort: {up.path} is back on branch {BRANCH} at {volta.short_id}; kept {words}")
    return words


@dataclasses.dataclass
class Accepted:
    pin: upstream.Pin
    base: str
    refreshed: stack.RefreshResult
    report: Path


def accept(root: Path | str, *, progress: Progress = print) -> Accepted:
    """Make the complete replay the series: volta and the base move, pin.toml and patches/ are rewritten.

    The old pin.toml, patches/ and series/ are copied to a backup folder it
    names. Run again after an interruption, it finishes.
    """
    root = Path(root)
    with guard.checkout(root, progress):
        return _accept(root, progress)


def _accept(root: Path, progress: Progress) -> Accepted:
    up, state = _need_state(root)
    repo = up.repo
    if state.get("aborting"):
        raise RebaseError("an --abort of this replay was interrupted; run `nox -s refresh -- --abort` to finish it")
    if not state.get("accepting"):
        if state["stopped"] is not None:
            name = state["entries"][state["stopped"]["index"]]["name"]
            raise RebaseError(f"the replay stopped at {name}; resolve it and `--continue` (or `--abort`) first")
        if not _complete(state):
            raise RebaseError(
                f"the replay onto {state['onto']['spec']} was interrupted after {len(state['rows'])} of "
                f"{len(state['entries'])} patches; nothing was accepted. `nox -s refresh -- --continue` "
                "finishes it"
            )
        series = model.Series.load(root)
        if series.digest() != state["series_digest"] or _sha256(root / upstream.PIN_FILE) != state["pin_sha256"]:
            raise RebaseError(
                "patches/, series/ or pin.toml changed since the replay started; accepting would overwrite "
                "that. `--abort`, keep the change (commit it), then start the replay again"
            )
        branch = repo.references.get(ONTO_REF)
        if branch is None or str(branch.target) != state["tip"]:
            raise RebaseError(
                f"branch {ONTO_BRANCH} in {up.path} is not at the replayed tip {state['tip'][:12]}; "
                "put it back or --abort"
            )
        _refuse_dirty(up, "--accept")
        new_up = Upstream(repo, repo[state["onto"]["base"]], upstream.SOURCE_SDIST, up.path)
        stack.render(new_up, state["tip"])  # tiers in order, fields present: before anything is written
        target = Target(**state["onto"])
        pin = upstream.Pin.load(root)
        if target.source == SOURCE_SDIST:
            new_pin = release_pin(pin, releases.Release(**target.release))
            sdist_base = target.base
        else:
            if not target.version:
                raise RebaseError(
                    f"{target.spec} names no vLLM version, so the pin cannot say which release it is; "
                    "replay onto a release tag (vX.Y.Z) instead"
                )
            rel = releases.find(target.version, progress=progress)
            new_pin = release_pin(pin, rel, commit=target.git_commit)
            sdist = upstream.fetch_sdist(new_pin, progress)
            sdist_base = str(upstream.import_base(repo, sdist, new_pin, upstream.release_ref(rel.version)))
        notes = (
            f"Moved from vLLM {pin.version} by `nox -s refresh -- --onto {target.spec}` and `--accept`;",
            f"the state before is kept in upstream/ as {state['backup']}/ (volta, base).",
        )
        files = [upstream.PIN_FILE, str(model.SERIES_FILE)] + [f"{model.PATCH_DIR}/{e.name}" for e in series.entries]
        kept_dir = backup_mod.keep(root, files, why=f"--accept of the replay onto {target.spec}")
        progress(f"--accept: the pin, series/ and patches/ as they were are kept in {kept_dir}")
        state["accepting"] = {
            "pin_text": upstream.pin_text(new_pin, base_commit=sdist_base, notes=notes),
            "sdist_base": sdist_base,
            "backup_dir": str(kept_dir),
            "version": new_pin.version,
            "commit_known": bool(new_pin.commit),
        }
        _save_state(up, state)
    acc = state["accepting"]
    target = Target(**state["onto"])
    tip = repo[state["tip"]]
    pin_path = root / upstream.PIN_FILE
    if pin_path.read_text(encoding="utf-8") != acc["pin_text"]:
        faults.point("write pin.toml")
        tmp = pin_path.with_name(pin_path.name + ".tmp")
        tmp.write_text(acc["pin_text"], encoding="utf-8")
        tmp.replace(pin_path)
    progress(f"--accept: pin.toml now pins vLLM {acc['version']}" + ("" if acc["commit_known"] else " (git commit not known)"))
    new_up = Upstream(repo, repo[target.base], upstream.SOURCE_SDIST, up.path)
    rendered, series_text = stack.render(new_up, tip.id)
    files, _ = stack.write_series(root, rendered, series_text, force=True,
                                  always_backup="", progress=progress)
    faults.point("move volta")
    repo.references.create(BRANCH_REF, tip.id, force=True)
    faults.point("move base")
    repo.references.create(BASE_REF, repo[target.base].id, force=True)
    faults.point("HEAD to volta")
    repo.set_head(BRANCH_REF)
    branch = repo.references.get(ONTO_REF)
    if branch is not None:
        faults.point("delete volta-onto")
        branch.delete()
    faults.point("remove state.json")
    _state_file(up).unlink(missing_ok=True)
    refreshed = stack.RefreshResult(files, 0.0, acc["backup_dir"])
    final_pin = upstream.Pin.load(root)
    return Accepted(final_pin, acc["sdist_base"], refreshed, report_path(up))
