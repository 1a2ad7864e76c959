"""The wheel's version: ``<upstream version>+volta.<series release>``.

The series release is the vllm-volta project's own setuptools-scm version
(tags ``v1``, ``v2``, ...). A tagged checkout gives ``+volta.3``; anything
else carries setuptools-scm's dev and commit parts, e.g. ``3.1.dev2+g1a2b3c4``
becomes ``+volta.3.1.dev2.g1a2b3c4``, which cannot be mistaken for a release.
The empty route adds ``.empty`` so a wheel without CUDA extensions says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import InvalidVersion, Version


class VersionError(ValueError):
    pass


def project_version(root: Path) -> str:
    """The project's setuptools-scm version (from git), or its installed metadata."""
    try:
        from setuptools_scm import get_version
        return get_version(root=str(root), tag_regex=r"^v(?P<version>\d+(?:\.\d+)*)$",
                           fallback_version="0.0.dev0")
    except Exception:
        pass
    try:
        from importlib.metadata import version
        return version("vllm-volta-tools")
    except Exception as exc:
        raise VersionError(f"cannot tell the vllm-volta version of {root} (not a git checkout "
                           f"and the package is not installed): {exc}") from None


def label(project: str, *, empty: bool = False) -> str:
    """``volta.<release>[.pre][.postN][.devN][.<local parts>][.empty]`` for a project version."""
    try:
        v = Version(project)
    except InvalidVersion:
        raise VersionError(f"{project!r} is not a PEP 440 version") from None
    parts = ["volta", *(str(n) for n in v.release)]
    if v.pre:
        parts.append(f"{v.pre[0]}{v.pre[1]}")
    if v.post is not None:
        parts.append(f"post{v.post}")
    if v.dev is not None:
        parts.append(f"dev{v.dev}")
    if v.local:
        parts += [p for p in re.split(r"[.+_-]", v.local) if p]
    if empty:
        parts.append("empty")
    return ".".join(parts)


def wheel_version(upstream: str, project: str, *, empty: bool = False) -> str:
    version = f"{upstream}+{label(project, empty=empty)}"
    Version(version)  # a valid PEP 440 version, or InvalidVersion
    return version


def is_release(version: str) -> bool:
    """True for ``0.9.2+volta.N`` (N all digits): a tagged series release."""
    v = Version(version)
    return bool(v.local) and re.fullmatch(r"volta\.\d+(\.\d+)*", v.local) is not None
