"""Read the series provenance that the build wing embeds in the vllm wheel.

The build wing (``vllm_volta.build.provenance``) writes ``volta_provenance.json``
into the wheel's ``.dist-info``. This module reads it from a wheel file or from
an installed distribution without importing vllm (which needs torch). Stdlib
only: it runs on fleet hosts.
"""

from __future__ import annotations

import json
import zipfile
from importlib import metadata
from pathlib import Path

FILENAME = "volta_provenance.json"


def is_provenance_member(member: str) -> bool:
    """True for ``<name>-<version>.dist-info/volta_provenance.json``."""
    parts = member.replace("\\", "/").split("/")
    return len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == FILENAME


def read_wheel_provenance(wheel: Path) -> dict | None:
    with zipfile.ZipFile(wheel) as archive:
        members = sorted(n for n in archive.namelist() if is_provenance_member(n))
        if not members:
            return None
        return json.loads(archive.read(members[0]).decode("utf-8"))


def read_installed_provenance(distribution: str = "vllm") -> tuple[dict | None, str | None]:
    """Return (provenance, path it came from) for an installed distribution."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None, None
    for entry in sorted(dist.files or [], key=str):
        if is_provenance_member(str(entry)):
            path = Path(str(dist.locate_file(entry)))
            try:
                return json.loads(path.read_text(encoding="utf-8")), str(path)
            except (OSError, ValueError):
                continue
    return None, None
