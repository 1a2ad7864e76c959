"""Find and check the vLLM wheels that the build wing left in ``dist/``.

A shippable wheel is distribution ``vllm`` at ``0.9.2+volta.N`` (vLLM's own
setup.py may append a label such as ``.cu124`` or ``.empty`` to the local
version).  Beside it lies ``<wheel>.sha256`` written by the build wing; the
digest in it must match the wheel's bytes before anything is uploaded.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

VLLM_BASE = "0.9.2"
_LOCAL_RE = re.compile(r"^volta\.(?P<n>\d+(?:\.\d+)*)(?P<rest>(?:\.[a-z0-9]+)*)$")
_BUILD_LABEL_RE = re.compile(r"^(empty|cu\d+)$")


class ArtifactError(Exception):
    """A wheel in dist/ cannot be shipped; the message says why and what to do."""


@dataclass(frozen=True)
class SeriesVersion:
    """The parts of ``0.9.2+volta.N[.label...]``.

    ``n`` is the series release (the project's tag ``vN``, e.g. ``3`` or
    ``3.1``). Labels ``cuXYZ`` (vLLM's CUDA suffix) and ``empty`` describe the
    build; any other label (``dev2``, ``g1a2b3c4``, ``post1``...) marks an
    untagged development build.
    """

    version: Version
    n: str
    labels: tuple[str, ...]

    @property
    def dev_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if not _BUILD_LABEL_RE.match(label))

    @property
    def is_release(self) -> bool:
        return not self.dev_labels

    @property
    def is_empty_build(self) -> bool:
        """True for a VLLM_TARGET_DEVICE=empty build (no CUDA kernels)."""
        return "empty" in self.labels

    @property
    def kind(self) -> str:
        if self.is_empty_build:
            kind = "NO CUDA kernels (VLLM_TARGET_DEVICE=empty), test build"
        else:
            cuda = [label for label in self.labels if re.fullmatch(r"cu\d+", label)]
            kind = f"CUDA {cuda[0][2:-1]}.{cuda[0][-1]} build" if cuda else "CUDA build"
        if not self.is_release:
            kind += ", untagged dev build"
        return kind


def parse_series_version(text: str | Version) -> SeriesVersion:
    """Parse a vllm version of this project, or raise ArtifactError."""
    version = Version(str(text))
    match = _LOCAL_RE.match(version.local or "")
    if version.public != VLLM_BASE or match is None:
        raise ArtifactError(
            f"version {version} is not a vllm-volta build: expected "
            f"{VLLM_BASE}+volta.N (optionally with a label such as .cu124 or "
            ".empty). Build the wheel with `python -m vllm_volta build wheel`, "
            "which sets the version."
        )
    labels = tuple(p for p in match.group("rest").split(".") if p)
    return SeriesVersion(version=version, n=match.group("n"), labels=labels)


def sha256_of(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def read_sidecar(wheel: Path) -> str:
    """Return the hex digest recorded in ``<wheel>.sha256``.

    Accepts a bare digest or ``sha256sum`` output (``<digest>  <name>``).
    """
    sidecar = wheel.with_name(wheel.name + ".sha256")
    if not sidecar.is_file():
        raise ArtifactError(
            f"{sidecar} is missing: every wheel ships with its sha256. Rebuild "
            f"with `python -m vllm_volta build wheel`, or write it with "
            f"`sha256sum {wheel.name} > {sidecar.name}` inside {wheel.parent}."
        )
    fields = sidecar.read_text(encoding="ascii", errors="replace").split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise ArtifactError(f"{sidecar} holds no sha256 digest (expected 64 hex digits).")
    if len(fields) > 1 and Path(fields[1].lstrip("*")).name != wheel.name:
        raise ArtifactError(
            f"{sidecar} names {fields[1]!r}, not {wheel.name!r}: it belongs to another file."
        )
    return fields[0].lower()


def wheel_metadata(path: Path) -> dict[str, list[str]]:
    """Read the METADATA headers of a wheel (multi-valued fields as lists)."""
    name, version, _build, _tags = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as archive:
        candidates = [
            n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1
        ]
        if len(candidates) != 1:
            raise ArtifactError(f"{path.name}: expected one .dist-info/METADATA, found {candidates}")
        text = archive.read(candidates[0]).decode("utf-8")
    message = HeaderParser().parsestr(text)
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key.lower(), []).append(value)
    return fields


@dataclass(frozen=True)
class Artifact:
    """One file to upload, with what the dry run and the checks need."""

    path: Path
    name: str
    version: Version
    sha256: str
    size: int
    kind: str

    @property
    def filename(self) -> str:
        return self.path.name


def _has_cuda_extension(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(re.fullmatch(r"vllm/_C(\.[^/]*)?\.so", n) for n in archive.namelist())


def check_vllm_wheel(path: Path) -> tuple[Artifact, SeriesVersion]:
    """Check one vllm wheel: name, version, metadata, sha256 sidecar, label vs content."""
    name, file_version, _build, _tags = parse_wheel_filename(path.name)
    if name != "vllm":
        raise ArtifactError(f"{path.name}: distribution is {name!r}, expected 'vllm'.")
    series = parse_series_version(file_version)
    meta = wheel_metadata(path)
    inner_name = canonicalize_name(meta.get("name", [""])[0])
    inner_version = Version(meta.get("version", ["0"])[0])
    if inner_name != "vllm" or inner_version != file_version:
        raise ArtifactError(
            f"{path.name}: METADATA says {inner_name} {inner_version}, the file name says "
            f"vllm {file_version}. The wheel was renamed after it was built; rebuild it."
        )
    has_c = _has_cuda_extension(path)
    if series.is_empty_build and has_c:
        raise ArtifactError(f"{path.name}: labelled .empty but contains vllm/_C*.so.")
    if not series.is_empty_build and not has_c:
        raise ArtifactError(
            f"{path.name}: a CUDA build must contain vllm/_C*.so and this wheel has none. "
            "A wheel built with VLLM_TARGET_DEVICE=empty is versioned ...+volta.N.empty."
        )
    recorded = read_sidecar(path)
    actual = sha256_of(path)
    if recorded != actual:
        raise ArtifactError(
            f"{path.name}: sha256 is {actual} but {path.name}.sha256 says {recorded}. "
            "The wheel changed after it was built (or the sidecar is stale): rebuild it."
        )
    artifact = Artifact(
        path=path,
        name="vllm",
        version=file_version,
        sha256=actual,
        size=path.stat().st_size,
        kind=series.kind,
    )
    return artifact, series


def find_vllm_wheels(dist: Path) -> tuple[list[Artifact], SeriesVersion]:
    """All vllm wheels in ``dist``; they must share one 0.9.2+volta.N version."""
    if not dist.is_dir():
        raise ArtifactError(
            f"{dist} does not exist. Build first: `python -m vllm_volta build wheel --out {dist}`."
        )
    wheels = sorted(p for p in dist.glob("vllm-*.whl") if p.is_file())
    if not wheels:
        raise ArtifactError(
            f"no vllm-*.whl in {dist}. Build first: `python -m vllm_volta build wheel --out {dist}`."
        )
    checked = [check_vllm_wheel(p) for p in wheels]
    versions = sorted({str(series.version) for _a, series in checked})
    if len(versions) != 1:
        raise ArtifactError(
            f"{dist} holds vllm wheels of several versions ({', '.join(versions)}): "
            "publish one series version at a time. Move the others out of the folder."
        )
    return [a for a, _s in checked], checked[0][1]
