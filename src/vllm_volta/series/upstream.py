"""The pinned upstream: the submodule, or the verified PyPI sdist imported as a base commit."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tarfile
import tempfile
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Callable

import pygit2

PIN_FILE = "pin.toml"
UPSTREAM_DIR = "upstream"
BRANCH = "volta"
BRANCH_REF = f"refs/heads/{BRANCH}"
BASE_REF = "refs/volta/base"
SOURCE_SUBMODULE = "submodule"
SOURCE_SDIST = "sdist"

Progress = Callable[[str], None]


class UpstreamError(RuntimeError):
    """The pinned upstream cannot be had or does not match the pin."""


@dataclasses.dataclass(frozen=True)
class Sdist:
    filename: str
    size: int
    sha256: str
    exclude: tuple[str, ...]
    author: str
    email: str
    date: datetime
    commit: str  # the base commit id the import must give


@dataclasses.dataclass(frozen=True)
class Pin:
    version: str
    tag: str
    url: str
    commit: str
    sdist: Sdist

    @classmethod
    def load(cls, root: Path | str) -> Pin:
        path = Path(root) / PIN_FILE
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UpstreamError(f"{path}: no pin file; restore it (`git checkout -- {PIN_FILE}`)") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UpstreamError(
                f"{path}: not valid TOML ({exc}); restore it (`git checkout -- {PIN_FILE}`) or fix it"
            ) from None
        try:
            return cls._from(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise UpstreamError(
                f"{path}: not a usable pin ({what}); restore it (`git checkout -- {PIN_FILE}`) or fix it"
            ) from None

    @classmethod
    def _from(cls, data: dict) -> Pin:
        up = data["upstream"]
        sd = up["sdist"]
        base = sd["base"]
        return cls(
            version=up["version"],
            tag=up["tag"],
            url=up["url"],
            commit=up["commit"],
            sdist=Sdist(
                filename=sd["filename"],
                size=int(sd["size"]),
                sha256=sd["sha256"].lower(),
                exclude=tuple(sd.get("exclude", ())),
                author=base["author"],
                email=base["email"],
                date=datetime.fromisoformat(base["date"]),
                commit=base.get("commit", ""),
            ),
        )


@dataclasses.dataclass(frozen=True)
class Upstream:
    """An opened upstream repository and the base commit the series applies to."""

    repo: pygit2.Repository
    base: pygit2.Commit
    source: str  # SOURCE_SUBMODULE or SOURCE_SDIST
    path: Path

    def describe(self) -> str:
        if self.source == SOURCE_SUBMODULE:
            return f"git submodule at {self.base.id} (tag checked)"
        return f"PyPI sdist, sha256 verified, imported as base commit {self.base.id}"


def cache_dir() -> Path:
    return Path(os.environ.get("VLLM_VOLTA_CACHE", Path.home() / ".cache" / "vllm-volta"))


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


ENV_SDIST_INDEX = "VLLM_VOLTA_SDIST_INDEX_URL"
DEFAULT_INDEX = "https://pypi.org/simple/"


def sdist_index() -> tuple[str, str]:
    """(simple API URL, the setting it came from) of the index the sdists are read from.

    ``VLLM_VOLTA_SDIST_INDEX_URL``, else pip's ``PIP_INDEX_URL``, else PyPI.
    The private upload index (``VLLM_VOLTA_INDEX_URL``) is not read here.
    """
    for name in (ENV_SDIST_INDEX, "PIP_INDEX_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value, name
    return DEFAULT_INDEX, "default"


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc="***@" + (parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def index_words() -> str:
    url, setting = sdist_index()
    how = "PyPI (set VLLM_VOLTA_SDIST_INDEX_URL or PIP_INDEX_URL for a mirror)" if setting == "default" else f"from {setting}"
    return f"{_redact(url)} ({how})"


def _simple(endpoint: str):
    from pypi_simple import PyPISimple  # imported late: only the offline path needs it

    return PyPISimple(endpoint=endpoint)


def clear_stale_downloads(folder: Path) -> None:
    """Remove .download-* files: with the cache lock held, each is a leftover of a killed download."""
    for stray in folder.glob(".download-*"):
        stray.unlink(missing_ok=True)


def fetch_sdist(pin: Pin, progress: Progress = print, *, name: str = "vllm") -> Path:
    """The pinned sdist from the cache, downloaded once, its sha256 verified.

    A cached file whose hash is wrong is reported and left alone; a fresh
    download whose hash is wrong is removed (it is the only file touched).
    Downloads into one cache are one at a time (a lock in the cache).
    """
    from . import guard

    target = cache_dir() / "sdist" / pin.sdist.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    with guard.hold("sdist-cache", f"the sdist cache {target.parent}", progress):
        clear_stale_downloads(target.parent)
        if target.exists():
            digest = _sha256(target)
            if digest != pin.sdist.sha256:
                raise UpstreamError(
                    f"{target}: sha256 {digest} is not the pinned {pin.sdist.sha256}. "
                    "Nothing was changed. Remove that file and run again to download it anew."
                )
            progress(f"sdist: {target} (cached, sha256 verified)")
            return target
        endpoint, _ = sdist_index()
        progress(f"sdist: downloading {pin.sdist.filename} from {index_words()}")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".download-")
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            try:
                with _simple(endpoint) as client:
                    page = client.get_project_page(name)
                    matches = [p for p in page.packages if p.filename == pin.sdist.filename]
                    if not matches:
                        raise UpstreamError(
                            f"the package index {index_words()} has no {pin.sdist.filename}; point "
                            f"{ENV_SDIST_INDEX} at an index that has it, then run again"
                        )
                    client.download_package(matches[0], tmp_path, verify=False)
            except UpstreamError:
                raise
            except Exception as exc:  # network, HTTP and parse errors of the index
                raise UpstreamError(
                    f"cannot download {pin.sdist.filename} from {index_words()}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Connect to it, "
                    f"or set {ENV_SDIST_INDEX} (or PIP_INDEX_URL) to a reachable mirror, or put the file "
                    f"at {target}; then run again"
                ) from None
            digest = _sha256(tmp_path)
            if digest != pin.sdist.sha256:
                raise UpstreamError(
                    f"downloaded {pin.sdist.filename} has sha256 {digest}, not the pinned "
                    f"{pin.sdist.sha256}: refusing it. The download was discarded; "
                    f"check the index ({index_words()}) and the pin."
                )
            tmp_path.replace(target)
        finally:
            tmp_path.unlink(missing_ok=True)
    progress(f"sdist: {target} ({pin.sdist.size:,} bytes, sha256 verified)")
    return target


def _excluded(rel: str, exclude: tuple[str, ...]) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude)


def import_sdist_tree(repo: pygit2.Repository, sdist: Path, pin: Pin) -> pygit2.Oid:
    """Write the sdist's files as a git tree (no work tree involved)."""
    root: dict = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/", 1)
            if len(parts) < 2 or not parts[1] or member.isdir():
                continue
            rel = parts[1]
            if _excluded(rel, pin.sdist.exclude):
                continue
            if member.issym():
                oid = repo.create_blob(member.linkname.encode())
                mode = pygit2.enums.FileMode.LINK
            elif member.isfile():
                data = tar.extractfile(member).read()
                oid = repo.create_blob(data)
                mode = (
                    pygit2.enums.FileMode.BLOB_EXECUTABLE
                    if member.mode & 0o111
                    else pygit2.enums.FileMode.BLOB
                )
            else:
                continue
            node = root
            *dirs, leaf = rel.split("/")
            for d in dirs:
                node = node.setdefault(d, {})
            node[leaf] = (oid, mode)

    def write(node: dict) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        for name in sorted(node):
            value = node[name]
            if isinstance(value, dict):
                tb.insert(name, write(value), pygit2.enums.FileMode.TREE)
            else:
                tb.insert(name, *value)
        return tb.write()

    return write(root)


def base_signature(pin: Pin) -> pygit2.Signature:
    when = pin.sdist.date
    offset = int(when.utcoffset().total_seconds() // 60) if when.utcoffset() else 0
    return pygit2.Signature(pin.sdist.author, pin.sdist.email, int(when.timestamp()), offset)


def base_message(pin: Pin) -> str:
    return (
        f"vLLM {pin.version} from its PyPI sdist\n\n"
        f"{pin.sdist.filename}, {pin.sdist.size} bytes, sha256 {pin.sdist.sha256}.\n"
        f"Stands in for tag {pin.tag} ({pin.commit}) where the submodule cannot be\n"
        f"cloned. Left out (sdist-only files): {', '.join(pin.sdist.exclude)}.\n"
    )


def _open(path: Path) -> pygit2.Repository | None:
    if not (path / ".git").exists():
        return None
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError:
        return None


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def open_upstream(root: Path | str) -> Upstream | None:
    """The upstream repository if it has been materialized, else None."""
    root = Path(root)
    path = root / UPSTREAM_DIR
    repo = _open(path)
    if repo is None:
        return None
    pin = Pin.load(root)
    ref = repo.references.get(BASE_REF)
    if ref is not None:
        base = repo[ref.target]
        source = SOURCE_SDIST if base.author.email == pin.sdist.email else SOURCE_SUBMODULE
        return Upstream(repo, base, source, path)
    return _adopt_submodule(repo, pin, path)


def _adopt_submodule(repo: pygit2.Repository, pin: Pin, path: Path) -> Upstream:
    try:
        base = repo[pin.commit]
    except (KeyError, ValueError):
        raise UpstreamError(
            f"{path} is a git repository without the pinned commit {pin.commit}; "
            f"run `git submodule update --init upstream`, or move it aside to use the sdist"
        ) from None
    tag = repo.references.get(f"refs/tags/{pin.tag}")
    if tag is not None:
        peeled = tag.peel(pygit2.Commit).id
        if str(peeled) != pin.commit:
            raise UpstreamError(
                f"tag {pin.tag} in {path} names {peeled}, but pin.toml pins {pin.commit}; "
                "the pin (and the submodule gitlink) must be corrected before applying"
            )
    repo.references.create(BASE_REF, base.id, force=True)
    return Upstream(repo, base, SOURCE_SUBMODULE, path)


STAGING = ".upstream-import"


def _half_import(path: Path) -> bool:
    """upstream/.git from an import cut short by an older engine: no refs, no commit, no files."""
    repo = _open(path)
    if repo is None:
        return False
    try:
        empty = repo.head_is_unborn and not list(repo.references)
    except pygit2.GitError:
        return False
    return empty and all(p.name == ".git" for p in path.iterdir())


def materialize(root: Path | str, progress: Progress = print) -> Upstream:
    """Open upstream/, or create it from the verified sdist when it is absent.

    The import is built in ``.upstream-import/`` beside it and renamed into
    place once it is whole, so an interrupted import leaves only that folder,
    which the next run removes.
    """
    import shutil

    root = Path(root)
    path = root / UPSTREAM_DIR
    staging = root / STAGING
    if _half_import(path):
        progress(f"upstream: removing the half-finished import an interrupted run left in {path}")
        shutil.rmtree(path / ".git")
    existing = open_upstream(root)
    if existing is not None:
        if staging.exists():
            shutil.rmtree(staging)
        progress(f"upstream: {existing.describe()}")
        return existing
    if path.exists() and not _is_empty_dir(path):
        raise UpstreamError(
            f"{path} exists, is not empty and is not a git repository; "
            "move it aside, then run again"
        )
    pin = Pin.load(root)
    progress("upstream: submodule not cloned; using the PyPI sdist instead")
    sdist = fetch_sdist(pin, progress)
    if staging.exists():
        progress(f"upstream: removing {staging}, left by an interrupted import")
        shutil.rmtree(staging)
    from . import faults

    faults.point("init staging repository")
    repo = pygit2.init_repository(str(staging), initial_head=BRANCH)
    tree = import_sdist_tree(repo, sdist, pin)
    sig = base_signature(pin)
    base_id = repo.create_commit(None, sig, sig, base_message(pin), tree, [])
    if pin.sdist.commit and str(base_id) != pin.sdist.commit:
        raise UpstreamError(
            f"importing {sdist.name} gave base commit {base_id}, not the pinned "
            f"{pin.sdist.commit}: the import is not reproducible here (pygit2/libgit2 "
            f"{pygit2.__version__}/{pygit2.LIBGIT2_VERSION}?). {staging} was left for inspection; "
            "remove it before running again"
        )
    faults.point("base refs")
    repo.references.create(BASE_REF, base_id, force=True)
    repo.references.create(BRANCH_REF, base_id, force=True)
    repo.set_head(BRANCH_REF)
    progress(f"upstream: checking out {sum(1 for _ in _walk(repo[tree]))} files")
    faults.point("checkout the import")
    repo.checkout_tree(repo[tree], strategy=pygit2.enums.CheckoutStrategy.FORCE)
    repo.set_head(BRANCH_REF)
    faults.point("move the import into place")
    if path.exists():
        path.rmdir()  # empty (checked above): the submodule's placeholder
    staging.rename(path)
    repo = pygit2.Repository(str(path))
    up = Upstream(repo, repo[base_id], SOURCE_SDIST, path)
    progress(f"upstream: {up.describe()}")
    return up


def _walk(tree: pygit2.Tree):
    for entry in tree:
        if entry.type_str == "tree":
            yield from _walk(entry)
        else:
            yield entry


# ----------------------------------------------------------------------
# other releases (for `refresh --onto` and `upstream-report`, docs/rebase.md)

UPSTREAM_REF_PREFIX = "refs/volta/upstream/"


def release_ref(version: str) -> str:
    """Where the imported base commit of ``version``'s sdist is kept in upstream/."""
    return f"{UPSTREAM_REF_PREFIX}{version}"


def release_pin(
    pin: Pin,
    *,
    version: str,
    filename: str,
    size: int,
    sha256: str,
    date: datetime,
    commit: str = "",
) -> Pin:
    """The pin ``pin`` would become for another release's sdist.

    Same url and exclusions; the import identity follows the pinned scheme
    (the version in the author name, the same email, the upload day at
    00:00 UTC as the date), so the base commit id depends on the sdist's
    files only. ``commit`` is the git commit of tag v<version>, "" when it
    is not known (then it is not invented).
    """
    author = (
        pin.sdist.author.replace(pin.version, version)
        if pin.version in pin.sdist.author
        else f"vLLM {version} (PyPI sdist import)"
    )
    return Pin(
        version=version,
        tag=f"v{version}",
        url=pin.url,
        commit=commit,
        sdist=Sdist(
            filename=filename,
            size=int(size),
            sha256=sha256.lower(),
            exclude=pin.sdist.exclude,
            author=author,
            email=pin.sdist.email,
            date=date,
            commit="",
        ),
    )


def import_base(repo: pygit2.Repository, sdist: Path, pin: Pin, ref: str | None = None) -> pygit2.Oid:
    """Import ``sdist`` as a parentless base commit the way :func:`materialize` does.

    Nothing but the objects and ``ref`` (when given) is written: no branch,
    HEAD or work tree changes.
    """
    tree = import_sdist_tree(repo, sdist, pin)
    sig = base_signature(pin)
    oid = repo.create_commit(None, sig, sig, base_message(pin), tree, [])
    if ref:
        repo.references.create(ref, oid, force=True)
    return oid


def _toml_str(value: str) -> str:
    # A TOML basic string: JSON's escapes are all valid TOML escapes.
    import json

    return json.dumps(value, ensure_ascii=False)


def pin_text(pin: Pin, *, base_commit: str, notes: tuple[str, ...] = ()) -> str:
    """pin.toml for ``pin`` whose sdist import gives ``base_commit``.

    ``notes`` are comment lines put under the header (how the pin moved).
    An empty ``pin.commit`` is written as "" with a comment saying it is not
    known, rather than a made-up id.
    """
    sd = pin.sdist
    out = [
        "# The upstream vLLM this series is written against. The pin moves only when a",
        "# maintainer moves it (see docs/rebase.md).",
        *(f"# {n}" for n in notes),
        "",
        "[upstream]",
        f"version = {_toml_str(pin.version)}",
        f"tag = {_toml_str(pin.tag)}",
        f"url = {_toml_str(pin.url)}",
    ]
    if pin.commit:
        out.append(f"# The commit tag {pin.tag} names, and the gitlink of the upstream/ submodule.")
    else:
        out += [
            f"# The commit tag {pin.tag} names is NOT KNOWN here: the pin was moved from the",
            "# PyPI sdist, and no git repository of vLLM was reachable. Fill it in (and the",
            "# upstream/ submodule gitlink) where the submodule can be cloned; the sdist base",
            "# commit below changes with it (its message names this commit), and",
            "# `nox -s apply` on a fresh checkout reports the new id to put there.",
        ]
    out += [
        f"commit = {_toml_str(pin.commit)}",
        "",
        "[upstream.sdist]",
        "# Used when the submodule cannot be cloned: the same release from PyPI.",
        f"filename = {_toml_str(sd.filename)}",
        f"size = {sd.size}",
        "# As the package index lists it; every download is checked against it.",
        f"sha256 = {_toml_str(sd.sha256)}",
        "# Files only the sdist has (setuptools writes them), left out of the base commit.",
        "exclude = [" + ", ".join(_toml_str(e) for e in sd.exclude) + "]",
        "",
        "[upstream.sdist.base]",
        "# The imported base commit is made with this fixed identity and date, so its",
        "# id is the same on every machine.",
        f"author = {_toml_str(sd.author)}",
        f"email = {_toml_str(sd.email)}",
        f"date = {_toml_str(sd.date.isoformat())}",
        "# The id that identity, date and the sdist's files give; materializing checks it.",
        f"commit = {_toml_str(base_commit)}",
        "",
    ]
    return "\n".join(out)
