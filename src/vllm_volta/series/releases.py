"""vLLM releases as the package index lists them: version, sdist file, size, sha256, upload day.

The index is the sdist index (``VLLM_VOLTA_SDIST_INDEX_URL``, else
``PIP_INDEX_URL``, else PyPI; see :func:`upstream.sdist_index`). Each answer is kept in the cache, so a release that was
looked up once can be found again offline.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timezone
from typing import Iterable

from packaging.version import InvalidVersion, Version

from .upstream import Progress, UpstreamError, cache_dir, index_words, sdist_index

PROJECT = "vllm"


class ReleaseError(UpstreamError):
    """The index (or its cached answer) has no usable sdist for a release."""


@dataclasses.dataclass(frozen=True)
class Release:
    version: str
    filename: str
    size: int
    sha256: str  # as the index lists it
    uploaded: str  # ISO date-time of the upload, "" when the index gives none

    @property
    def key(self) -> Version:
        return Version(self.version)

    @property
    def import_date(self) -> datetime:
        """The date of the base commit an import of this sdist gets: the upload day, 00:00 UTC."""
        if not self.uploaded:
            raise ReleaseError(
                f"the index gives no upload time for {self.filename}; the import date cannot be "
                "derived. Use a submodule ref instead (--onto <tag>)."
            )
        day = datetime.fromisoformat(self.uploaded).astimezone(timezone.utc).date()
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def from_packages(packages: Iterable) -> list[Release]:
    """The final releases among pypi-simple ``DistributionPackage``s, newest first.

    One sdist per version; pre-releases, dev releases, yanked files and
    files without a sha256 are left out.
    """
    found: dict[str, Release] = {}
    for p in packages:
        if p.package_type != "sdist" or not p.version or p.is_yanked:
            continue
        try:
            version = Version(p.version)
        except InvalidVersion:
            continue
        if version.is_prerelease or version.is_devrelease or version.local:
            continue
        sha = (p.digests or {}).get("sha256")
        if not sha or not p.filename.endswith(".tar.gz"):
            continue
        uploaded = p.upload_time.astimezone(timezone.utc).isoformat() if p.upload_time else ""
        found[str(version)] = Release(str(version), p.filename, int(p.size or 0), sha.lower(), uploaded)
    return sorted(found.values(), key=lambda r: r.key, reverse=True)


def _cache_file(project: str):
    return cache_dir() / "index" / f"{project}.json"


def _save(project: str, releases: list[Release]) -> None:
    path = _cache_file(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two runs sharing a cache do not share a temp file
    tmp.write_text(json.dumps([dataclasses.asdict(r) for r in releases], indent=1) + "\n")
    tmp.replace(path)


def _load(project: str) -> list[Release] | None:
    path = _cache_file(project)
    if not path.exists():
        return None
    return [Release(**d) for d in json.loads(path.read_text())]


def releases(project: str = PROJECT, progress: Progress = print) -> list[Release]:
    """All final releases with an sdist, newest first (the cached answer when offline)."""
    from pypi_simple import PyPISimple

    endpoint, _ = sdist_index()
    try:
        with PyPISimple(endpoint=endpoint) as client:
            page = client.get_project_page(project)
    except Exception as exc:  # network, HTTP or parse errors all mean "no fresh answer"
        cached = _load(project)
        if cached is None:
            raise ReleaseError(
                f"the package index {index_words()} could not be read ({type(exc).__name__}) and no "
                f"earlier answer is cached in {_cache_file(project)}. Connect to the index (or set "
                "VLLM_VOLTA_SDIST_INDEX_URL or PIP_INDEX_URL to a mirror) and run again."
            ) from None
        progress(f"index: unreachable ({type(exc).__name__}); using the answer cached in {_cache_file(project)}")
        return cached
    found = from_packages(page.packages)
    _save(project, found)
    return found


def newest(count: int = 3, project: str = PROJECT, progress: Progress = print) -> list[Release]:
    return releases(project, progress)[:count]


def find(version: str, project: str = PROJECT, progress: Progress = print) -> Release:
    """The release ``version`` (a final release with an sdist on the index)."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        raise ReleaseError(f"{version!r} is not a version number") from None
    known = releases(project, progress)
    for r in known:
        if r.key == wanted:
            return r
    newest_known = ", ".join(r.version for r in known[:5]) or "none"
    raise ReleaseError(
        f"the package index has no final sdist of {project} {version} (newest: {newest_known})"
    )
