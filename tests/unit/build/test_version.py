"""The +volta.N label from the project's setuptools-scm version."""

from __future__ import annotations

import pytest
from packaging.version import Version

from vllm_volta.build import version


@pytest.mark.parametrize("project, wheel", [
    ("3", "0.9.2+volta.3"),
    ("3.1", "0.9.2+volta.3.1"),
    ("3.1.dev2+g1a2b3c4", "0.9.2+volta.3.1.dev2.g1a2b3c4"),
    ("3.1.dev2+g1a2b3c4.d20251129", "0.9.2+volta.3.1.dev2.g1a2b3c4.d20251129"),
    ("0.0.dev0", "0.9.2+volta.0.0.dev0"),
    ("4rc1", "0.9.2+volta.4.rc1"),
])
def test_wheel_version(project, wheel):
    assert version.wheel_version("0.9.2", project) == wheel
    Version(wheel)  # valid PEP 440


def test_only_tagged_releases_look_like_releases():
    assert version.is_release("0.9.2+volta.3")
    assert not version.is_release("0.9.2+volta.3.1.dev2.g1a2b3c4")
    assert not version.is_release("0.9.2+volta.3.empty")


def test_empty_route_is_labelled():
    assert version.wheel_version("0.9.2", "3", empty=True) == "0.9.2+volta.3.empty"


def test_untagged_dev_build_sorts_apart_from_release():
    # pip must never take a dev build for the release it follows.
    assert Version("0.9.2+volta.3.1.dev2.g1a2b3c4") != Version("0.9.2+volta.3")


def test_garbage_project_version_is_an_error():
    with pytest.raises(version.VersionError):
        version.label("not a version")
