"""Verify a built wheel; any failed check fails the build.

Checks:

- every CUDA extension holds sm_70 cubins (cuobjdump), and the report lists
  every architecture found per extension (cubins and PTX);
- no RPATH/RUNPATH and no path of the build host (staging folder, cache,
  home, tree, toolkit, build environment) inside any ``.so``;
- METADATA names ``vllm`` at the expected version and (kernel routes)
  requires ``torch==2.7.0``; WHEEL tags; RECORD lists every member with the
  right sha256 and size;
- the provenance record is there and agrees with METADATA;
- the ``.sha256`` file beside a wheel in dist/ matches it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import subprocess
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from . import elf, provenance, wheelfile

TARGET_ARCH = "sm_70"
TORCH_REQUIREMENT = "torch==2.7.0"
# What each kernel route must ship: name -> whether it carries device code.
KERNEL_EXTENSIONS = {
    "vllm/_C.abi3.so": True,
    "vllm/_moe_C.abi3.so": True,
    "vllm/cumem_allocator.abi3.so": False,
}
_ELF = re.compile(r"\.(sm_\d+[a-z]?)\.cubin\b")
_PTX = re.compile(r"\.(sm_\d+[a-z]?)\.ptx\b")


class VerificationError(RuntimeError):
    def __init__(self, report: "Report"):
        super().__init__("wheel verification failed:\n  - " + "\n  - ".join(report.problems))
        self.report = report


@dataclasses.dataclass
class Extension:
    name: str
    size: int
    device_code: bool
    cubins: dict[str, int]
    ptx: dict[str, int]
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    host_paths: list[str]

    def archs(self) -> str:
        parts = [f"{a} x{n}" for a, n in sorted(self.cubins.items(), key=_arch_key)]
        parts += [f"PTX {a.replace('sm_', 'compute_')} x{n}" for a, n in sorted(self.ptx.items(), key=_arch_key)]
        return ", ".join(parts) if parts else "no device code"


@dataclasses.dataclass
class Report:
    wheel: str
    version: str = ""
    extensions: list[Extension] = dataclasses.field(default_factory=list)
    checks: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.checks if not ok]

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    def extension_summary(self) -> dict:
        return summarize(self.extensions)

    def rows(self) -> list[tuple[str, str, str, str]]:
        return [(e.name, f"{e.size / 1e6:.1f} MB", e.archs(),
                 "none" if not (e.rpath or e.runpath) else f"RPATH {e.rpath} RUNPATH {e.runpath}")
                for e in self.extensions]


def summarize(exts: list[Extension]) -> dict:
    """Per extension: cubins per arch, PTX per virtual arch (compute_XX), size."""
    return {e.name: {"cubins": dict(sorted(e.cubins.items(), key=_arch_key)),
                     "ptx": {a.replace("sm_", "compute_"): n for a, n in sorted(e.ptx.items(), key=_arch_key)},
                     "bytes": e.size} for e in exts}


def _arch_key(item):
    name = item[0] if isinstance(item, tuple) else item
    m = re.match(r"sm_(\d+)", name)
    return (int(m.group(1)) if m else 0, name)


def list_device_code(so: Path, cuobjdump: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(cubins per arch, PTX per arch) of one shared object, from cuobjdump."""
    found = []
    for flag, pattern in (("--list-elf", _ELF), ("--list-ptx", _PTX)):
        proc = subprocess.run([str(cuobjdump), flag, str(so)], capture_output=True, text=True)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 and "does not contain device code" not in text:
            raise RuntimeError(f"{cuobjdump} {flag} {so.name} failed (exit {proc.returncode}): {text[-500:]}")
        found.append(dict(collections.Counter(pattern.findall(proc.stdout))))
    return found[0], found[1]


def inspect_extensions(wheel: Path, cuobjdump: Path | None, host_prefixes: list[str],
                       extra: dict[str, bytes] | None = None) -> list[Extension]:
    """Inspect every ``.so`` of ``wheel``, plus ``extra`` (name -> bytes) about to be added."""
    extra = extra or {}
    with zipfile.ZipFile(wheel) as zf:
        names = sorted({n for n in zf.namelist() if n.endswith(".so")} | set(extra))
        return [inspect_one(name, extra[name] if name in extra else zf.read(name), cuobjdump, host_prefixes)
                for name in names if name.endswith(".so")]


def inspect_one(name: str, data: bytes, cuobjdump: Path | None, host_prefixes: list[str]) -> Extension:
    dyn = elf.read_dynamic(data)
    device = ".nv_fatbin" in dyn.section_names
    cubins: dict[str, int] = {}
    ptx: dict[str, int] = {}
    if device:
        if cuobjdump is None:
            raise RuntimeError(f"cuobjdump is needed to list the device code of {name} and none was found")
        with tempfile.TemporaryDirectory(prefix="volta-verify-") as tmp:
            path = Path(tmp) / Path(name).name
            path.write_bytes(data)
            cubins, ptx = list_device_code(path, cuobjdump)
    hits = []
    for prefix in host_prefixes:
        pos = data.find(prefix.encode())
        if pos >= 0:
            end = data.find(b"\0", pos, pos + 200)
            hits.append(data[pos:end if end > 0 else pos + 120].decode("utf-8", "replace"))
    return Extension(name, len(data), device, cubins, ptx, dyn.needed, dyn.rpath, dyn.runpath, hits)


def verify_wheel(wheel: Path, *, version: str, route: str, cuobjdump: Path | None,
                 host_prefixes: list[str], extensions: list[Extension] | None = None) -> Report:
    wheel = Path(wheel)
    report = Report(wheel=wheel.name)
    prefixes = sorted({p.rstrip("/") + "/" for p in host_prefixes if p and len(p) > 1})
    with zipfile.ZipFile(wheel) as zf:
        meta = wheelfile.metadata(zf)
        info_dir = wheelfile.dist_info(zf)
        report.version = meta.get("Version", "")
        report.check("metadata name", meta.get("Name") == "vllm", f"Name is {meta.get('Name')!r}")
        report.check("metadata version", meta.get("Version") == version,
                     f"Version is {meta.get('Version')!r}, expected {version!r}")
        requires = [r.replace(" ", "") for r in meta.get_all("Requires-Dist") or []]
        if route != "empty":
            report.check("requires torch==2.7.0", TORCH_REQUIREMENT in requires,
                         f"Requires-Dist has {[r for r in requires if r.startswith('torch')]}")
            tags = Parser().parsestr(zf.read(f"{info_dir}/WHEEL").decode()).get_all("Tag") or []
            report.check("wheel tag cp38-abi3", any(t.startswith("cp38-abi3-") for t in tags), f"Tag {tags}")
        report.check("filename matches metadata",
                     wheel.name.startswith(f"vllm-{version}-"),
                     f"{wheel.name} does not start with vllm-{version}-")
        report.check("RECORD", *_record_ok(zf, info_dir))
        try:
            record = provenance.read_wheel(wheel)
            ok = record.get("version") == version and record.get("kernel_route") == route
            report.check("provenance", ok, f"version {record.get('version')!r}, route "
                                           f"{record.get('kernel_route')!r} (expected {version!r}, {route!r})")
        except KeyError:
            report.check("provenance", False, f"no {info_dir}/{provenance.FILENAME}")
    exts = extensions if extensions is not None else inspect_extensions(wheel, cuobjdump, prefixes)
    report.extensions = exts
    names = {e.name for e in exts}
    if route == "empty":
        report.check("no CUDA extensions (empty route)", not exts, f"found {sorted(names)}")
    else:
        missing = sorted(set(KERNEL_EXTENSIONS) - names)
        report.check("extensions present", not missing, f"missing {missing}")
    for e in exts:
        if e.device_code or KERNEL_EXTENSIONS.get(e.name):
            report.check(f"{e.name} sm_70", e.cubins.get(TARGET_ARCH, 0) > 0,
                         f"no {TARGET_ARCH} cubin (found: {e.archs()})")
        report.check(f"{e.name} RPATH/RUNPATH", not (e.rpath or e.runpath),
                     f"RPATH {list(e.rpath)} RUNPATH {list(e.runpath)}")
        report.check(f"{e.name} host paths", not e.host_paths, f"contains {e.host_paths[:3]}")
    return report


def _record_ok(zf: zipfile.ZipFile, info_dir: str) -> tuple[bool, str]:
    import csv
    import io
    record_name = f"{info_dir}/RECORD"
    rows = list(csv.reader(io.StringIO(zf.read(record_name).decode("utf-8"))))
    listed = {r[0]: r for r in rows if r}
    members = [i for i in zf.infolist() if not i.filename.endswith("/")]
    problems = []
    for info in members:
        if info.filename == record_name:
            continue
        row = listed.pop(info.filename, None)
        if row is None:
            problems.append(f"{info.filename} not in RECORD")
            continue
        data = zf.read(info)
        if row[1] != wheelfile.record_hash(data) or row[2] != str(len(data)):
            problems.append(f"{info.filename} hash/size differ from RECORD")
    listed.pop(record_name, None)
    problems += [f"RECORD lists {name}, which the wheel lacks" for name in listed]
    return (not problems, "; ".join(problems[:5]) or f"{len(members)} members consistent")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sha256(wheel: Path) -> Path:
    digest = sha256_file(wheel)
    out = wheel.with_name(wheel.name + ".sha256")
    out.write_text(f"{digest}  {wheel.name}\n")
    return out


def check_sha256(wheel: Path) -> tuple[bool, str]:
    side = wheel.with_name(wheel.name + ".sha256")
    if not side.exists():
        return False, f"{side.name} missing"
    want = side.read_text().split()[0]
    have = sha256_file(wheel)
    return want == have, f"{side.name} says {want[:12]}..., the wheel is {have[:12]}..."
