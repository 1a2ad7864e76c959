"""Publish the vllm wheel(s) and the vllm-volta meta wheel to the private index.

Order of work:
1. check every vllm wheel in dist/ (version, label, sha256 sidecar);
2. build the vllm-volta meta wheel that pins exactly that version;
3. read the index's simple pages: a planned file the index already serves
   with the same bytes (sha256) is done; any other file under either version
   (different bytes, or a file this build does not have) refuses the whole
   publish (an index version is immutable);
4. upload the rest with twine, vllm first and the meta wheel last, so that
   ``pip install vllm-volta`` never sees a meta wheel whose vllm is missing;
5. read the simple pages again and check each file is listed with the sha256
   recorded beside it.

So a publish cut short (killed, network lost after the vllm wheel) is
finished by running it again: what is on the index already counts as done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import requests
from rich.console import Console
from rich.table import Table

from vllm_volta.ship.artifacts import (
    Artifact,
    ArtifactError,
    SeriesVersion,
    find_vllm_wheels,
    read_sidecar,
    sha256_of,
)
from vllm_volta.ship.index import IndexConfig, IndexFile, IndexProblem, list_project_files, redact
from vllm_volta.ship.meta import META_NAME, build_meta_wheel, spec_for


class PublishRefused(Exception):
    """Publishing would break a rule; nothing was uploaded."""


@dataclass
class PlannedUpload:
    artifact: Artifact
    on_index: list[IndexFile] = field(default_factory=list)  # the index's files of this version
    identical: bool = False  # the index serves this very file, byte for byte

    @property
    def done(self) -> bool:
        return self.identical and all(f.filename == self.artifact.filename for f in self.on_index)

    @property
    def conflict(self) -> bool:
        return bool(self.on_index) and not self.done

    @property
    def status(self) -> str:
        if not self.on_index:
            return "new"
        if self.done:
            return "on the index, identical (done)"
        same = any(f.filename == self.artifact.filename for f in self.on_index)
        return "exists, different bytes" if same else "exists (other files of this version)"


@dataclass
class PublishPlan:
    series: SeriesVersion
    uploads: list[PlannedUpload]
    index: IndexConfig | None = None
    index_note: str = "index not read"

    @property
    def conflicts(self) -> list[PlannedUpload]:
        return [u for u in self.uploads if u.conflict]

    @property
    def pending(self) -> list[PlannedUpload]:
        return [u for u in self.uploads if not u.done]


def prepare(dist: Path, *, allow_empty_build: bool = False, allow_dev_build: bool = False) -> PublishPlan:
    """Check dist/ and (re)build the meta wheel beside the vllm wheels."""
    wheels, series = find_vllm_wheels(dist)
    if not series.is_release and not allow_dev_build:
        raise PublishRefused(
            f"vllm {series.version} is an untagged development build (labels "
            f"{'.'.join(series.dev_labels)}). On a shared index its meta version would outrank the "
            f"release for `pip install vllm-volta==0.9.2.{series.n}` (a local label sorts higher). "
            "Tag the series release (git tag vN) and rebuild, or pass --allow-dev-build to publish "
            "it to a test index."
        )
    if series.is_empty_build and not allow_empty_build:
        raise PublishRefused(
            f"vllm {series.version} was built with VLLM_TARGET_DEVICE=empty: it has no CUDA "
            "kernels and would not run on a V100. It is for tests of the publish path only; "
            "pass --allow-empty-build to publish it to a test index."
        )
    spec = spec_for(wheels, series)
    meta_path = build_meta_wheel(spec, dist)
    meta = Artifact(
        path=meta_path,
        name=META_NAME,
        version=spec.version,
        sha256=read_sidecar(meta_path),
        size=meta_path.stat().st_size,
        kind=f"meta: requires vllm=={series.version}",
    )
    uploads = [PlannedUpload(w) for w in wheels] + [PlannedUpload(meta)]
    return PublishPlan(series=series, uploads=uploads)


def _served_sha256(config: IndexConfig, f: IndexFile, session: requests.Session | None) -> str | None:
    """The sha256 the index gives for ``f``; where it lists none, that of the bytes it serves."""
    if f.sha256:
        return f.sha256
    import hashlib

    http = session or requests.Session()
    auth = (config.username, config.password) if config.password else None
    try:
        response = http.get(f.url, auth=auth, timeout=300, stream=True)
        response.raise_for_status()
        digest = hashlib.sha256()
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
    except requests.RequestException as exc:
        raise IndexProblem(f"cannot read {redact(f.url)} to compare it: {exc}. Is the index up?") from None
    return digest.hexdigest()


def check_index(plan: PublishPlan, config: IndexConfig, session: requests.Session | None = None) -> None:
    """Fill in which planned files' versions the index already holds, and which are there identical."""
    listings: dict[str, list[IndexFile]] = {}
    for upload in plan.uploads:
        name = upload.artifact.name
        if name not in listings:
            listings[name] = list_project_files(config, name, session=session)
        upload.on_index = [f for f in listings[name] if f.version == upload.artifact.version]
        same = [f for f in upload.on_index if f.filename == upload.artifact.filename]
        upload.identical = bool(same) and _served_sha256(config, same[0], session) == upload.artifact.sha256
    plan.index = config
    plan.index_note = f"read {redact(config.simple_url)}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_plan(plan: PublishPlan, console: Console, *, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("#", "file", "kind", "size", "sha256", "on the index"):
        table.add_column(column, overflow="fold")
    for number, upload in enumerate(plan.uploads, 1):
        a = upload.artifact
        status = upload.status if plan.index else "not checked"
        style = "red" if upload.conflict else ("green" if upload.done else None)
        table.add_row(str(number), a.filename, a.kind, _size(a.size), a.sha256[:12], status, style=style)
    console.print(table)
    console.print(f"index: {plan.index.describe() if plan.index else 'not configured'} ({plan.index_note})")
    if plan.series.is_empty_build:
        console.print(
            "[bold yellow]NOTE: this is a VLLM_TARGET_DEVICE=empty build (no CUDA kernels), "
            "for testing the publish path only.[/]"
        )


def refuse_conflicts(plan: PublishPlan) -> None:
    if not plan.conflicts:
        return
    lines = []
    for upload in plan.conflicts:
        a = upload.artifact
        same = [f for f in upload.on_index if f.filename == a.filename]
        detail = ", ".join(f.filename for f in upload.on_index)
        why = (" with different bytes (sha256 differs from " + a.sha256[:12] + ")") if same else ""
        lines.append(f"  {a.name} {a.version} is already on the index{why}: {detail}")
    raise PublishRefused(
        "refusing to publish over an existing version with different files; nothing was uploaded.\n"
        + "\n".join(lines)
        + "\nA published version is immutable: tag the next series release (git tag vN+1, giving "
        "0.9.2+volta.N+1) and rebuild. If the earlier upload was broken, delete that version on the "
        "index by hand first."
    )


def _twine_upload(config: IndexConfig, path: Path, *, progress: bool) -> None:
    from twine.commands.upload import upload as twine_upload
    from twine.settings import Settings

    settings = Settings(
        repository_url=config.upload_url,
        username=config.username,
        password=config.password,
        non_interactive=True,
        disable_progress_bar=not progress,
        config_file=os.devnull,
    )
    twine_upload(settings, [str(path)])


def upload_plan(
    plan: PublishPlan,
    config: IndexConfig,
    console: Console,
    *,
    session: requests.Session | None = None,
) -> list[str]:
    """Upload in order and verify. Returns notes (warnings) for the summary."""
    from twine.exceptions import TwineException

    refuse_conflicts(plan)
    for upload in plan.uploads:
        a = upload.artifact
        if upload.done:
            console.print(f"{a.filename} is on the index already, identical: done")
            continue
        if sha256_of(a.path) != a.sha256:
            raise ArtifactError(f"{a.filename} changed on disk since it was checked; rebuild it.")
        console.print(f"uploading {a.filename} ({_size(a.size)}) ...")
        try:
            _twine_upload(config, a.path, progress=console.is_terminal)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            if status in (400, 409) and _now_identical(plan, upload, config, session):
                console.print(f"{a.filename} was put on the index meanwhile, identical: done")
                continue
            hint = (
                "the index already has a file of that name with other bytes (someone published meanwhile?)"
                if status in (400, 409)
                else "check the upload URL and the token's rights"
            )
            raise IndexProblem(f"upload of {a.filename} failed with HTTP {status}: {hint}; "
                               "run the publish again to go on from there.") from None
        except TwineException as exc:
            raise IndexProblem(f"twine refused {a.filename}: {exc}; run the publish again to go on from there.") from None
        except requests.RequestException as exc:
            raise IndexProblem(f"upload of {a.filename} did not get through ({type(exc).__name__}); "
                               "run the publish again: what is on the index already counts as done.") from None
    return verify_published(plan, config, session=session)


def _now_identical(plan: PublishPlan, upload: PlannedUpload, config: IndexConfig, session) -> bool:
    files = list_project_files(config, upload.artifact.name, session=session)
    same = [f for f in files if f.filename == upload.artifact.filename]
    return bool(same) and _served_sha256(config, same[0], session) == upload.artifact.sha256


def verify_published(
    plan: PublishPlan, config: IndexConfig, *, session: requests.Session | None = None
) -> list[str]:
    notes = []
    listings: dict[str, list[IndexFile]] = {}
    for upload in plan.uploads:
        a = upload.artifact
        if a.name not in listings:
            listings[a.name] = list_project_files(config, a.name, session=session)
        served = [f for f in listings[a.name] if f.filename == a.filename]
        if not served:
            raise IndexProblem(
                f"{a.filename} was uploaded but {redact(config.simple_url)} does not list it. "
                "Check VLLM_VOLTA_INDEX_SIMPLE_URL points at the index uploaded to."
            )
        if served[0].sha256 is None:
            notes.append(f"{a.filename}: the index publishes no sha256; compare by hand: {a.sha256}")
        elif served[0].sha256 != a.sha256:
            raise IndexProblem(
                f"{a.filename}: the index serves sha256 {served[0].sha256}, the sidecar says "
                f"{a.sha256}. Do not install it; delete it on the index and publish again."
            )
    return notes
