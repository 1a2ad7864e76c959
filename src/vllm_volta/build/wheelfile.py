"""Small wheel-file operations: read METADATA, add files, rewrite RECORD.

RECORD lines are ``path,sha256=<urlsafe base64, no padding>,size``; RECORD
itself is listed with empty hash and size (the wheel spec).

Members are copied *raw* (their compressed bytes, no recompression), so
adding a provenance file to a wheel holding 460 MB of extensions costs a
copy, not a second deflate of everything; members taken from another wheel
(upstream's extensions) are copied raw from it the same way.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import struct
import zipfile
from email.parser import Parser
from pathlib import Path

_LOCAL_HEADER = 30
_DATA_DESCRIPTOR = 0x08
FIXED_TIME = (2025, 7, 8, 0, 0, 0)


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


def _raw_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The member's stored (compressed) bytes, read past its local header."""
    fp = zf.fp
    fp.seek(info.header_offset)
    header = fp.read(_LOCAL_HEADER)
    if header[:4] != b"PK\x03\x04":
        raise ValueError(f"{zf.filename}: bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    fp.seek(info.header_offset + _LOCAL_HEADER + name_len + extra_len)
    return fp.read(info.compress_size)


def _write_raw(dst: zipfile.ZipFile, info: zipfile.ZipInfo, raw: bytes) -> None:
    """Append a member from its compressed bytes; the central directory is written on close."""
    out = zipfile.ZipInfo(info.filename, info.date_time)
    out.compress_type = info.compress_type
    out.external_attr = info.external_attr
    out.create_system = info.create_system
    out.CRC = info.CRC
    out.compress_size = info.compress_size
    out.file_size = info.file_size
    out.flag_bits = info.flag_bits & ~_DATA_DESCRIPTOR  # sizes are in the local header
    out.extra = b""
    out.header_offset = dst.fp.tell()
    dst.fp.write(out.FileHeader())
    dst.fp.write(raw)
    dst.filelist.append(out)
    dst.NameToInfo[out.filename] = out
    dst.start_dir = dst.fp.tell()
    dst._didModify = True


def add_files(wheel: Path, files: dict[str, bytes], out: Path | None = None,
              raw_from: dict[str, Path] | None = None) -> Path:
    """Write ``wheel`` with ``files`` (name -> bytes) and ``raw_from`` (name -> another
    wheel to copy that member from, compressed as it is there) added or replaced,
    and a RECORD rebuilt from every member's bytes (consistent by construction)."""
    wheel = Path(wheel)
    out = Path(out) if out else wheel
    raw_from = raw_from or {}
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(wheel) as src:
        info_dir = dist_info(src)
        record_name = f"{info_dir}/RECORD"
        rows: list[tuple[str, str, str]] = []
        replaced = set(files) | set(raw_from) | {record_name}
        with zipfile.ZipFile(tmp, "w") as dst:
            for item in src.infolist():
                if item.filename in replaced:
                    continue
                _write_raw(dst, item, _raw_bytes(src, item))
                data = src.read(item)
                rows.append((item.filename, record_hash(data), str(len(data))))
            for name, other in sorted(raw_from.items()):
                with zipfile.ZipFile(other) as ozf:
                    item = ozf.getinfo(name)
                    _write_raw(dst, item, _raw_bytes(ozf, item))
                    data = ozf.read(item)
                rows.append((name, record_hash(data), str(len(data))))
            for name, data in sorted(files.items()):
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(info, data)
                rows.append((name, record_hash(data), str(len(data))))
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for row in rows:
                writer.writerow(row)
            writer.writerow((record_name, "", ""))
            info = zipfile.ZipInfo(record_name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, buf.getvalue())
        with zipfile.ZipFile(tmp) as check:
            bad = check.testzip()
            if bad is not None:
                raise ValueError(f"rewriting {wheel.name}: member {bad} is corrupt")
    shutil.move(tmp, out)
    return out
