"""The private index: where it is, who we are, and what it already holds.

Location and credentials come from the environment, with the token optionally
from the system keyring. Nothing here is ever written to the repository.

    VLLM_VOLTA_INDEX_URL         upload endpoint (what twine's --repository-url takes)
    VLLM_VOLTA_INDEX_SIMPLE_URL  simple API root; default: <upload URL>/simple/
    VLLM_VOLTA_INDEX_USER        user name (default: __token__)
    VLLM_VOLTA_INDEX_TOKEN       password or API token; if unset, read from the
                                 keyring entry (service=<upload URL>, user)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from pypi_simple import ProjectPage

ENV_URL = "VLLM_VOLTA_INDEX_URL"
ENV_SIMPLE = "VLLM_VOLTA_INDEX_SIMPLE_URL"
ENV_USER = "VLLM_VOLTA_INDEX_USER"
ENV_TOKEN = "VLLM_VOLTA_INDEX_TOKEN"
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


class IndexProblem(Exception):
    """The index cannot be used; the message says what to set or check."""


def redact(url: str) -> str:
    """Drop any user:password@ from a URL before it is shown."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return urlunsplit(parts)


@dataclass(frozen=True)
class IndexConfig:
    upload_url: str
    simple_url: str
    username: str
    password: str | None = field(default=None, repr=False)
    token_source: str = "none"

    def describe(self) -> str:
        return (
            f"upload {redact(self.upload_url)}, simple {redact(self.simple_url)}, "
            f"user {self.username}, token from {self.token_source}"
        )


def _keyring_password(service: str, username: str) -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        return keyring.get_password(service, username)
    except KeyringError:
        return None


def load_config(env: Mapping[str, str] | None = None, *, need_token: bool = True) -> IndexConfig:
    """Read the index location and credentials from ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    upload = env.get(ENV_URL, "").strip()
    if not upload:
        raise IndexProblem(
            f"no private index configured: set {ENV_URL} to its upload URL "
            f"(and {ENV_USER} / {ENV_TOKEN}, or store the token with "
            f"`keyring set <upload URL> <user>`). See docs/install.md."
        )
    if not upload.endswith("/"):
        upload += "/"
    simple = env.get(ENV_SIMPLE, "").strip() or urljoin(upload, "simple/")
    if not simple.endswith("/"):
        simple += "/"
    user = env.get(ENV_USER, "").strip() or "__token__"
    token = env.get(ENV_TOKEN) or None
    source = "environment" if token else "none"
    if token is None:
        token = _keyring_password(upload, user)
        source = "keyring" if token else "none"
    if need_token and token is None:
        raise IndexProblem(
            f"no token for {redact(upload)} (user {user}): set {ENV_TOKEN}, or store it "
            f"with `keyring set {redact(upload)} {user}`."
        )
    return IndexConfig(upload, simple, user, token, source)


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    version: Version | None


def _version_of(filename: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def list_project_files(
    config: IndexConfig, project: str, *, session: requests.Session | None = None, timeout: float = 30
) -> list[IndexFile]:
    """The files the index serves for ``project`` ([] when it has none)."""
    url = urljoin(config.simple_url, canonicalize_name(project) + "/")
    http = session or requests.Session()
    auth = (config.username, config.password) if config.password else None
    try:
        response = http.get(
            url,
            headers={"Accept": ACCEPT},
            auth=auth,
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise IndexProblem(f"cannot read {redact(url)}: {exc}. Is the index up and the URL right?") from exc
    if response.status_code == 404 or response.is_redirect:
        # 404: no such project. A redirect: a pypiserver-style fallback to PyPI,
        # which means the private index holds no file for it.
        return []
    if response.status_code in (401, 403):
        raise IndexProblem(
            f"{redact(url)} answered {response.status_code}: the credentials cannot read "
            "the index. Check the user and token."
        )
    if response.status_code != 200:
        raise IndexProblem(f"{redact(url)} answered {response.status_code} {response.reason}.")
    page = ProjectPage.from_response(response, canonicalize_name(project))
    return [
        IndexFile(p.filename, p.url, (p.digests or {}).get("sha256"), _version_of(p.filename))
        for p in page.packages
    ]
