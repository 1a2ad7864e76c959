"""Write a small pure-Python wheel byte-reproducibly (fixed times, sorted entries)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(
    out_dir: Path,
    name: str,
    version: str,
    *,
    metadata: str,
    files: dict[str, bytes] | None = None,
    dist_info_files: dict[str, bytes] | None = None,
    sidecar: bool = True,
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` and, by default, its ``.sha256``.

    ``metadata`` is the full METADATA text; ``files`` are package files by
    archive path; ``dist_info_files`` go into the .dist-info folder.
    """
    stem = canonicalize_name(name).replace("-", "_")
    dist_info = f"{stem}-{version}.dist-info"
    entries: dict[str, bytes] = dict(files or {})
    entries[f"{dist_info}/METADATA"] = metadata.encode("utf-8")
    entries[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: vllm-volta ship\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    for base, data in (dist_info_files or {}).items():
        entries[f"{dist_info}/{base}"] = data
    record_name = f"{dist_info}/RECORD"
    record = [_record_line(n, d) for n, d in sorted(entries.items())] + [f"{record_name},,"]
    entries[record_name] = ("\n".join(record) + "\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w") as archive:
        for entry in sorted(entries, key=lambda n: (n == record_name, n)):
            info = zipfile.ZipInfo(entry, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[entry])
    if sidecar:
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    return target
