"""Canonical patch text: parse and emit, byte-stable.

A patch file is a mail message in the shape ``git format-patch
--zero-commit --no-signature`` writes, with fixed diff options, so that
``git am`` accepts it and so that emitting a parsed patch reproduces it
byte for byte::

    From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
    From: Name <email>
    Date: Tue, 8 Jul 2025 10:00:00 +0000
    Subject: [PATCH] subject line

    body, then the header trailers (Volta-Why:, Origin:, ...)
    ---
     diffstat

    diff --git ...
"""

from __future__ import annotations

import dataclasses
import email.utils
import re
from datetime import datetime, timedelta, timezone

import pygit2
from pygit2.enums import DiffStatsFormat

ZERO_FROM = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"

# Fixed diff options: what makes the emitted text depend on the trees only.
CONTEXT_LINES = 3
INTERHUNK_LINES = 0
STAT_WIDTH = 72
STAT_FORMAT = DiffStatsFormat.FULL | DiffStatsFormat.INCLUDE_SUMMARY

# Header fields every patch of the series must carry, in this order.
REQUIRED_FIELDS = (
    "Volta-Why",
    "Origin",
    "Upstream-Status",
    "Drop-When",
    "Tier",
    "Test",
)

_TRAILER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*): ?(.*)$")


class PatchFormatError(ValueError):
    """A patch file is not in the form this engine reads and writes."""


@dataclasses.dataclass(frozen=True)
class Patch:
    """One patch: the commit metadata and the diff text."""

    author_name: str
    author_email: str
    time: int  # seconds since the epoch
    offset: int  # minutes east of UTC
    subject: str
    body: str  # everything after the subject's blank line, trailers included
    diff: str  # from the first "diff --git" line to the end
    stat: str = ""  # the diffstat block, as emitted

    @property
    def message(self) -> str:
        """The commit message this patch stands for."""
        if self.body:
            return f"{self.subject}\n\n{self.body}\n"
        return f"{self.subject}\n"

    @property
    def fields(self) -> dict[str, str]:
        """The trailer block at the end of the body, as a dict."""
        return parse_trailers(self.body)

    def signature(self) -> pygit2.Signature:
        return pygit2.Signature(
            self.author_name, self.author_email, self.time, self.offset
        )


def parse_trailers(body: str) -> dict[str, str]:
    """Return the ``Key: value`` lines of the last paragraph of ``body``.

    A value may go on over following lines that start with whitespace.
    """
    paragraphs = body.strip("\n").split("\n\n")
    fields: dict[str, str] = {}
    if not paragraphs:
        return fields
    key = None
    for line in paragraphs[-1].splitlines():
        m = _TRAILER_RE.match(line)
        if m and not line[:1].isspace():
            key = m.group(1)
            fields[key] = m.group(2).strip()
        elif key and line[:1].isspace():
            fields[key] = (fields[key] + " " + line.strip()).strip()
        else:
            return {}
    return fields


def format_date(time: int, offset: int) -> str:
    tz = timezone(timedelta(minutes=offset))
    return email.utils.format_datetime(datetime.fromtimestamp(time, tz))


def parse_date(text: str, source: str = "<patch>") -> tuple[int, int]:
    try:
        dt = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError) as exc:
        raise PatchFormatError(f"{source}: unreadable Date: header {text!r} (RFC 2822, e.g. "
                               "'Tue, 8 Jul 2025 10:00:00 +0000')") from exc
    if dt.tzinfo is None:
        raise PatchFormatError(f"{source}: Date: header without a time zone: {text!r}")
    offset = int(dt.utcoffset().total_seconds() // 60)
    return int(dt.timestamp()), offset


def diff_stat(diff: pygit2.Diff) -> str:
    return diff.stats.format(STAT_FORMAT, STAT_WIDTH)


def tree_diff(repo: pygit2.Repository, old: pygit2.Tree, new: pygit2.Tree) -> pygit2.Diff:
    """The diff between two trees with the engine's fixed options."""
    return repo.diff(
        old, new, context_lines=CONTEXT_LINES, interhunk_lines=INTERHUNK_LINES
    )


def from_commit(repo: pygit2.Repository, commit: pygit2.Commit) -> Patch:
    """Build the Patch that ``commit`` (a single-parent commit) stands for."""
    if len(commit.parents) != 1:
        raise PatchFormatError(
            f"commit {commit.short_id} has {len(commit.parents)} parents; "
            "a series is a straight line of single-parent commits"
        )
    diff = tree_diff(repo, commit.parents[0].tree, commit.tree)
    subject, _, body = commit.message.partition("\n")
    return Patch(
        author_name=commit.author.name,
        author_email=commit.author.email,
        time=commit.author.time,
        offset=commit.author.offset,
        subject=subject.strip(),
        body=body.strip("\n"),
        diff=diff.patch or "",
        stat=diff_stat(diff) if diff.patch else "",
    )


def emit(patch: Patch) -> str:
    """The canonical text of ``patch``."""
    parts = [
        ZERO_FROM,
        f"From: {patch.author_name} <{patch.author_email}>\n",
        f"Date: {format_date(patch.time, patch.offset)}\n",
        f"Subject: [PATCH] {patch.subject}\n",
        "\n",
    ]
    if patch.body:
        parts.append(patch.body + "\n")
    parts.append("---\n")
    if patch.stat:
        parts.append(patch.stat)
        parts.append("\n")
    parts.append(patch.diff)
    return "".join(parts)


def parse(text: str, *, source: str = "<patch>") -> Patch:
    """Read a patch file written by :func:`emit` (or by git format-patch)."""
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].startswith("From "):
        raise PatchFormatError(f"{source}: does not start with a 'From <sha>' line")
    headers: dict[str, str] = {}
    i = 1
    last = None
    while i < len(lines) and lines[i].strip("\n"):
        line = lines[i].rstrip("\n")
        if line[:1] in (" ", "\t") and last:
            headers[last] += " " + line.strip()
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise PatchFormatError(f"{source}:{i + 1}: bad header line {line!r}")
            last = key.strip().lower()
            headers[last] = value.strip()
        i += 1
    for needed in ("from", "date", "subject"):
        if needed not in headers:
            raise PatchFormatError(f"{source}: missing the {needed.title()}: header")
    name, addr = email.utils.parseaddr(headers["from"])
    if not addr:
        raise PatchFormatError(f"{source}: unreadable From: header {headers['from']!r}")
    time, offset = parse_date(headers["date"], source)
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", headers["subject"])

    rest = "".join(lines[i + 1 :])
    diff_at = _find_diff_start(rest)
    head, diff = rest[:diff_at], rest[diff_at:]
    # head = body + "---\n" + stat + "\n"  (the stat may be absent)
    sep_at = _find_separator(head)
    if sep_at < 0:
        raise PatchFormatError(f"{source}: no '---' line between message and diff")
    body = head[:sep_at].rstrip("\n")
    stat = head[sep_at + 4 :]
    if stat.endswith("\n\n"):
        stat = stat[:-1]
    return Patch(
        author_name=name,
        author_email=addr,
        time=time,
        offset=offset,
        subject=subject,
        body=body,
        diff=diff,
        stat=stat,
    )


def _find_diff_start(text: str) -> int:
    if text.startswith("diff --git "):
        return 0
    at = text.find("\ndiff --git ")
    return len(text) if at < 0 else at + 1


def _find_separator(head: str) -> int:
    if head.startswith("---\n"):
        return 0
    at = head.rfind("\n---\n")
    return at + 1 if at >= 0 else -1


def parse_diff(patch: Patch, source: str = "") -> pygit2.Diff:
    try:
        return pygit2.Diff.parse_diff(patch.diff)
    except (pygit2.GitError, ValueError) as exc:
        where = f"{source}: " if source else ""
        raise PatchFormatError(f"{where}the diff of {patch.subject!r} does not parse ({exc})") from exc


def canonical_problems(text: str, *, source: str = "<patch>") -> list[str]:
    """What keeps ``text`` from being in canonical form (empty: canonical)."""
    try:
        patch = parse(text, source=source)
    except PatchFormatError as exc:
        return [str(exc)]
    problems = []
    if not text.startswith(ZERO_FROM):
        problems.append("the first line is not the zero-commit 'From 000...0' line")
    if patch.diff:
        try:
            diff = parse_diff(patch, source)
        except PatchFormatError as exc:
            return [str(exc)]
        if (diff.patch or "") != patch.diff:
            problems.append("the diff is not in the engine's fixed diff form")
        elif diff_stat(diff) != patch.stat:
            problems.append("the diffstat does not match the diff")
    if emit(patch) != text:
        problems.append("the text differs from its canonical emission (headers, spacing or signature)")
    return problems


_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slug(subject: str, limit: int = 52) -> str:
    """File-name slug of a subject, as format-patch makes it."""
    s = _SLUG_RE.sub("-", subject.lower()).strip("-")
    if len(s) > limit:
        s = s[:limit].rstrip("-")
    return s or "patch"


def filename(number: int, subject: str) -> str:
    return f"{number:04d}-{slug(subject)}.patch"
