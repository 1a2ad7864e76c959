"""`check`: the series is whole, numbered, documented, canonical and within policy."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pygit2
from pygit2.enums import ApplyLocation

from . import model, patchfile, policy, upstream


@dataclasses.dataclass(frozen=True)
class Problem:
    where: str
    what: str


def check(root: Path | str) -> list[Problem]:
    root = Path(root)
    problems: list[Problem] = []
    try:
        series = model.Series.load(root)
    except model.SeriesError as exc:
        return [Problem(str(model.SERIES_FILE), str(exc))]

    listed = {e.name for e in series.entries}
    on_disk = {p.name for p in series.patch_dir.glob("*.patch")}
    for name in sorted(on_disk - listed):
        problems.append(Problem(f"patches/{name}", "not listed in series/series"))
    for entry in series.entries:
        where = f"patches/{entry.name}"
        if entry.name not in on_disk:
            problems.append(Problem(f"series/series:{entry.line}", f"{entry.name} does not exist"))
            continue
    for number, entry in enumerate(series.entries, start=1):
        where = f"patches/{entry.name}"
        if entry.name not in on_disk:
            continue
        text = series.path_of(entry).read_text(encoding="utf-8")
        try:
            patch = patchfile.parse(text, source=where)
        except patchfile.PatchFormatError as exc:
            problems.append(Problem(where, str(exc)))
            continue
        expected = patchfile.filename(number, patch.subject)
        if entry.name != expected:
            problems.append(
                Problem(where, f"expected the name {expected} (number {number:04d} in the series, slug of its subject)")
            )
        fields = patch.fields
        for field in patchfile.REQUIRED_FIELDS:
            if not fields.get(field):
                problems.append(Problem(where, f"header field '{field}:' missing or empty"))
        tier = fields.get("Tier", "").lower()
        if tier and tier != entry.tier:
            problems.append(Problem(where, f"Tier: {tier} but listed under '# tier: {entry.tier}'"))
        test = fields.get("Test", "")
        if test and not (root / test.split("::", 1)[0]).exists():
            problems.append(Problem(where, f"Test: {test} names a file that does not exist"))
        for issue in patchfile.canonical_problems(text, source=where):
            problems.append(Problem(where, f"not canonical: {issue}"))
        for v in policy.violations(patch):
            problems.append(Problem(where, f"policy {v.rule}: {v.path}: {v.detail}"))
    if not problems:
        problems += applies(root, series)
    return problems


def applies(root: Path, series: model.Series) -> list[Problem]:
    """Whether the series applies, in order, onto the pinned base (when upstream/ is materialized).

    Done in a scratch repository that borrows upstream/'s objects: upstream/'s
    refs, index and work tree are not touched.
    """
    try:
        up = upstream.open_upstream(root)
    except upstream.UpstreamError:
        return []
    if up is None:
        return []
    with tempfile.TemporaryDirectory(prefix="vllm-volta-check-") as tmp:
        scratch = pygit2.init_repository(tmp)
        alternates = Path(scratch.path) / "objects" / "info" / "alternates"
        alternates.write_text(str(Path(up.repo.path).resolve() / "objects") + "\n")
        scratch = pygit2.Repository(tmp)
        index = scratch.index
        index.read_tree(scratch[up.base.tree.id])
        index.write()
        for entry in series.entries:
            patch = series.read(entry)
            if not patch.diff:
                continue
            diff = patchfile.parse_diff(patch, f"patches/{entry.name}")
            if not scratch.applies(diff, ApplyLocation.INDEX):
                return [Problem(f"patches/{entry.name}",
                                f"does not apply onto the pinned base {up.base.short_id} after the patches "
                                "before it; `nox -s apply` names the file and hunk")]
            scratch.apply(diff, ApplyLocation.INDEX)
    return []
