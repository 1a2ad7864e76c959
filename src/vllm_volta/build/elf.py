"""Read an ELF shared object's dynamic section: NEEDED, RPATH, RUNPATH.

Pure Python (ELF64 little-endian, what x86_64 and aarch64 wheels hold), so
verification needs no binutils.
"""

from __future__ import annotations

import dataclasses
import struct

DT_NULL, DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 0, 1, 5, 15, 29
SHT_DYNAMIC = 6


class ElfError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Dynamic:
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    section_names: tuple[str, ...]


def read_dynamic(data: bytes) -> Dynamic:
    if data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only ELF64 little-endian is supported")
    (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        name, stype, _flags, _addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, off)
        sections.append((name, stype, offset, size, link, entsize))
    shstr = sections[e_shstrndx] if e_shnum else None

    def cstr(table_off: int, index: int) -> str:
        end = data.index(b"\0", table_off + index)
        return data[table_off + index:end].decode("utf-8", "replace")

    names = tuple(cstr(shstr[2], s[0]) for s in sections) if shstr else ()
    needed: list[str] = []
    rpath: list[str] = []
    runpath: list[str] = []
    for _name, stype, offset, size, link, entsize in sections:
        if stype != SHT_DYNAMIC:
            continue
        strtab_off = sections[link][2]
        for pos in range(offset, offset + size, entsize or 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                needed.append(cstr(strtab_off, val))
            elif tag == DT_RPATH:
                rpath.append(cstr(strtab_off, val))
            elif tag == DT_RUNPATH:
                runpath.append(cstr(strtab_off, val))
    return Dynamic(tuple(needed), tuple(rpath), tuple(runpath), names)
