"""Build ``vllm-volta``: a wheel with no code that requires exactly one vllm build.

``pip install vllm-volta==0.9.2.N`` then pulls ``vllm==0.9.2+volta.N`` and
nothing else can satisfy that pin: PyPI's plain ``vllm`` releases do not match
an exact local-version specifier (PEP 440), however high their version.

When the vllm wheel's dependency lock lies beside it (``nox -s lock``, see
ship/lock.py), the meta wheel also requires every locked version exactly,
so a plain ``pip install vllm-volta==0.9.2.N`` gets the tested set, and it
carries the lock itself as ``volta-lock.txt`` in its ``.dist-info``.

The wheel is byte-reproducible (fixed timestamps, sorted entries), so building
it twice gives the same sha256 and a publish can be checked against a rebuild.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from vllm_volta.ship import lock as lock_mod
from vllm_volta.ship.artifacts import Artifact, SeriesVersion, wheel_metadata
from vllm_volta.ship.provenance import FILENAME as PROVENANCE_FILE
from vllm_volta.ship.provenance import read_wheel_provenance
from vllm_volta.ship.wheelwrite import write_wheel

META_NAME = "vllm-volta"
_META_FILE_STEM = "vllm_volta"


@dataclass(frozen=True)
class MetaSpec:
    """What the meta wheel says; derived from the vllm wheels it pins."""

    version: Version
    requirement: str
    requires_python: str | None
    pinned_files: tuple[tuple[str, str], ...]  # (filename, sha256)
    provenance: dict | None
    kind: str
    locked: tuple[str, ...] = ()  # the lock's exact pins (vllm's own line left out)
    lock_text: str | None = None

    @property
    def filename(self) -> str:
        return f"{_META_FILE_STEM}-{self.version}-py3-none-any.whl"


def meta_version_for(series: SeriesVersion) -> Version:
    """``0.9.2+volta.N`` -> ``0.9.2.N``; labels stay as a local version.

    ``0.9.2+volta.3.cu124`` -> ``0.9.2.3+cu124``, ``0.9.2+volta.3.empty`` ->
    ``0.9.2.3+empty``: one meta version per vllm version, so two builds never
    collide on the index.
    """
    base = f"{series.version.public}.{series.n}"
    return Version(f"{base}+{'.'.join(series.labels)}" if series.labels else base)


def spec_for(wheels: list[Artifact], series: SeriesVersion) -> MetaSpec:
    first = wheels[0].path
    requires_python = wheel_metadata(first).get("requires-python", [None])[0]
    locked, lock_text = (), None
    lock = lock_mod.lock_path(first)
    if lock.exists():
        lock_mod.check_lock(lock, first)
        lock_text = lock.read_text()
        locked = tuple(p.requirement() for p in lock_mod.read_pins(lock) if p.name != "vllm")
    return MetaSpec(
        version=meta_version_for(series),
        requirement=f"vllm=={series.version}",
        requires_python=requires_python,
        pinned_files=tuple(sorted((w.filename, w.sha256) for w in wheels)),
        provenance=read_wheel_provenance(first),
        kind=series.kind,
        locked=locked,
        lock_text=lock_text,
    )


def _metadata_text(spec: MetaSpec) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {META_NAME}",
        f"Version: {spec.version}",
        f"Summary: vLLM 0.9.2 for NVIDIA V100 (sm_70): installs exactly {spec.requirement}",
        "License: Apache-2.0",
    ]
    if spec.requires_python:
        lines.append(f"Requires-Python: {spec.requires_python}")
    lines.append(f"Requires-Dist: {spec.requirement}")
    lines += [f"Requires-Dist: {pin}" for pin in spec.locked]
    lines.append("Description-Content-Type: text/markdown")
    body = [
        f"# {META_NAME} {spec.version}",
        "",
        f"This distribution has no code. It requires `{spec.requirement}` exactly,",
        "the build of vLLM 0.9.2 patched for Tesla V100 (compute capability 7.0).",
        f"Build kind: {spec.kind}.",
        "",
        "Pinned files:",
        "",
    ]
    body += [f"- `{name}` sha256 `{digest}`" for name, digest in spec.pinned_files]
    if spec.locked:
        body += ["", f"Dependencies: the {len(spec.locked)} exact versions of the build's lock "
                 "(`volta-lock.txt` in this wheel's .dist-info, with hashes)."]
    if spec.provenance:
        body += ["", "Provenance (from the vllm wheel):", "", "```json"]
        body += json.dumps(spec.provenance, indent=2, sort_keys=True).splitlines()
        body += ["```"]
    return "\n".join(lines) + "\n\n" + "\n".join(body) + "\n"


def build_meta_wheel(spec: MetaSpec, out_dir: Path) -> Path:
    """Write the meta wheel and its ``.sha256`` sidecar into ``out_dir``."""
    pin = {
        "requirement": spec.requirement,
        "files": [{"filename": n, "sha256": d} for n, d in spec.pinned_files],
        "kind": spec.kind,
    }
    extra = {"volta-pin.json": (json.dumps(pin, indent=2, sort_keys=True) + "\n").encode()}
    if spec.lock_text:
        extra["volta-lock.txt"] = spec.lock_text.encode()
    if spec.provenance:
        extra[PROVENANCE_FILE] = (
            json.dumps(spec.provenance, indent=2, sort_keys=True) + "\n"
        ).encode()
    return write_wheel(
        out_dir, META_NAME, str(spec.version), metadata=_metadata_text(spec), dist_info_files=extra
    )
