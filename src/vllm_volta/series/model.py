"""The series: the ordered list of patches, grouped in the strategy note's tiers."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from . import patchfile

# The tiers of the user's strategy note, in the order they apply.
TIERS = ("critical", "recommended", "optional")

SERIES_FILE = Path("series") / "series"
PATCH_DIR = Path("patches")
TIER_MARK = "# tier:"
SERIES_PREAMBLE = (
    "# The vllm-volta patch series, applied top to bottom onto the pinned vLLM.\n"
    "# Written by `nox -s refresh`; `# tier:` lines open the strategy note's tiers.\n"
)


class SeriesError(ValueError):
    """The series file or a patch it names is not usable."""


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str  # file name under patches/
    tier: str
    line: int  # 1-based line in the series file (0 when generated)


@dataclasses.dataclass
class Series:
    root: Path
    entries: list[Entry]

    # -- reading -------------------------------------------------------
    @classmethod
    def load(cls, root: Path | str) -> Series:
        root = Path(root)
        path = root / SERIES_FILE
        if not path.exists():
            raise SeriesError(f"{path}: no series file; run `nox -s refresh` to write one")
        return cls(root, parse_series(path.read_text(encoding="utf-8"), source=str(path)))

    @property
    def series_path(self) -> Path:
        return self.root / SERIES_FILE

    @property
    def patch_dir(self) -> Path:
        return self.root / PATCH_DIR

    def path_of(self, entry: Entry) -> Path:
        return self.patch_dir / entry.name

    def read(self, entry: Entry) -> patchfile.Patch:
        path = self.path_of(entry)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SeriesError(
                f"{self.series_path}:{entry.line}: names {entry.name}, which is not in patches/"
            ) from None
        return patchfile.parse(text, source=str(path))

    def upto(self, tier: str | None) -> list[Entry]:
        """The entries of ``tier`` and every tier before it (all when None)."""
        if tier is None:
            return list(self.entries)
        if tier not in TIERS:
            raise SeriesError(f"unknown tier {tier!r}; the tiers are {', '.join(TIERS)}")
        keep = set(TIERS[: TIERS.index(tier) + 1])
        return [e for e in self.entries if e.tier in keep]

    def digest(self) -> str:
        """sha256 over the series file and every patch file, in order."""
        h = hashlib.sha256()
        h.update(self.series_path.read_bytes())
        for entry in self.entries:
            h.update(b"\0" + entry.name.encode() + b"\0")
            h.update(self.path_of(entry).read_bytes())
        return h.hexdigest()


def parse_series(text: str, *, source: str = "series") -> list[Entry]:
    entries: list[Entry] = []
    tier: str | None = None
    seen_tiers: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.lower().startswith(TIER_MARK):
            tier = line[len(TIER_MARK):].strip().lower()
            if tier not in TIERS:
                raise SeriesError(f"{source}:{number}: unknown tier {tier!r} (one of {', '.join(TIERS)})")
            if tier in seen_tiers or (seen_tiers and TIERS.index(tier) < TIERS.index(seen_tiers[-1])):
                raise SeriesError(f"{source}:{number}: tier {tier!r} out of order; keep {' < '.join(TIERS)}")
            seen_tiers.append(tier)
            continue
        if not line or line.startswith("#"):
            continue
        name = line.split("#", 1)[0].strip()
        if tier is None:
            raise SeriesError(f"{source}:{number}: {name} comes before any '# tier:' line")
        if any(e.name == name for e in entries):
            raise SeriesError(f"{source}:{number}: {name} is listed twice")
        entries.append(Entry(name, tier, number))
    return entries


def render_series(entries: list[tuple[str, str]]) -> str:
    """Series text for (name, tier) pairs, already in tier order."""
    out = [SERIES_PREAMBLE]
    current = None
    for name, tier in entries:
        if tier != current:
            out.append(f"\n{TIER_MARK} {tier}\n")
            current = tier
        out.append(name + "\n")
    return "".join(out)
