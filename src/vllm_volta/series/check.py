"""`check`: the series is whole, numbered, documented, canonical and within policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import model, patchfile, policy


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
    return problems
