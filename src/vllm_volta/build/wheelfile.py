"""Small wheel-file operations: read METADATA, add files, rewrite RECORD.

RECORD lines are ``path,sha256=<urlsafe base64, no padding>,size``; RECORD
itself is listed with empty hash and size (PEP 376 / the wheel spec).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import zipfile
from email.parser import Parser
from pathlib import Path


def record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def dist_info(zf: zipfile.ZipFile) -> str:
    names = {n.split("/", 1)[0] for n in zf.namelist() if n.split("/", 1)[0].endswith(".dist-info")}
    if len(names) != 1:
        raise ValueError(f"{zf.filename}: expected one .dist-info folder, found {sorted(names)}")
    return names.pop()


def metadata(zf: zipfile.ZipFile):
    return Parser().parsestr(zf.read(f"{dist_info(zf)}/METADATA").decode("utf-8"))


def add_files(wheel: Path, files: dict[str, bytes], out: Path | None = None) -> Path:
    """Write ``wheel`` with ``files`` added (or replaced) and a fresh RECORD.

    Members are copied as they are (compression kept); RECORD is rebuilt from
    the bytes of every member, so it is consistent by construction.
    """
    wheel = Path(wheel)
    out = Path(out) if out else wheel
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(wheel) as src:
        info_dir = dist_info(src)
        record_name = f"{info_dir}/RECORD"
        rows: list[tuple[str, str, str]] = []
        with zipfile.ZipFile(tmp, "w") as dst:
            for item in src.infolist():
                if item.filename == record_name or item.filename in files:
                    continue
                data = src.read(item)
                dst.writestr(item, data, compress_type=item.compress_type)
                rows.append((item.filename, record_hash(data), str(len(data))))
            for name, data in sorted(files.items()):
                info = zipfile.ZipInfo(name, date_time=(2025, 7, 8, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(info, data)
                rows.append((name, record_hash(data), str(len(data))))
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for row in rows:
                writer.writerow(row)
            writer.writerow((record_name, "", ""))
            info = zipfile.ZipInfo(record_name, date_time=(2025, 7, 8, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, buf.getvalue())
    shutil.move(tmp, out)
    return out
