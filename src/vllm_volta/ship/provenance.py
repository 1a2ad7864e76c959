"""Read the series provenance that the build wing embeds in the vllm wheel.

The build wing writes a JSON file whose name contains ``volta`` and
``provenance`` either in the ``vllm`` package or in the wheel's ``.dist-info``.
This module finds it in a wheel file or in an installed distribution, without
importing vllm (which needs torch). Stdlib only: it runs on fleet hosts.
"""

from __future__ import annotations

import json
import re
import zipfile
from importlib import metadata
from pathlib import Path

_NAME_RE = re.compile(r"(^|[^a-z])volta[^/]*provenance[^/]*\.json$", re.IGNORECASE)


def is_provenance_member(member: str) -> bool:
    """True for ``vllm/<..volta..provenance..>.json`` or ``<dist-info>/<same>``."""
    parts = member.replace("\\", "/").split("/")
    if len(parts) != 2:
        return False
    top, base = parts
    return (top == "vllm" or top.endswith(".dist-info")) and bool(_NAME_RE.search(base))


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
