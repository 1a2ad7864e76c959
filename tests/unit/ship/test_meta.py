import json
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from vllm_volta.ship.artifacts import find_vllm_wheels, parse_series_version, wheel_metadata
from vllm_volta.ship.meta import build_meta_wheel, meta_version_for, spec_for

from .wheels import PROVENANCE, vllm_wheel


@pytest.mark.parametrize(
    ("vllm", "meta"),
    [("0.9.2+volta.4", "0.9.2.4"), ("0.9.2+volta.4.cu124", "0.9.2.4+cu124"),
     ("0.9.2+volta.4.empty", "0.9.2.4+empty"), ("0.9.2+volta.4.1.dev2.gab12.empty", "0.9.2.4.1+dev2.gab12.empty")],
)
def test_meta_version(vllm, meta):
    assert str(meta_version_for(parse_series_version(vllm))) == meta


def _build(tmp_path, version="0.9.2+volta.3"):
    vllm_wheel(tmp_path, version)
    wheels, series = find_vllm_wheels(tmp_path)
    return build_meta_wheel(spec_for(wheels, series), tmp_path), wheels


def test_meta_requires_exactly_the_build(tmp_path):
    meta, wheels = _build(tmp_path)
    fields = wheel_metadata(meta)
    assert fields["name"] == ["vllm-volta"] and fields["version"] == ["0.9.2.3"]
    assert fields["requires-dist"] == ["vllm==0.9.2+volta.3"]
    assert fields["requires-python"] == [">=3.9"]
    with zipfile.ZipFile(meta) as archive:
        names = archive.namelist()
        assert all(n.startswith("vllm_volta-0.9.2.3.dist-info/") for n in names)
        pin = json.loads(archive.read("vllm_volta-0.9.2.3.dist-info/volta-pin.json"))
        provenance = json.loads(archive.read("vllm_volta-0.9.2.3.dist-info/volta_provenance.json"))
    assert pin["files"] == [{"filename": wheels[0].filename, "sha256": wheels[0].sha256}]
    assert provenance == PROVENANCE


def test_pin_admits_only_the_volta_build():
    """PEP 440: an exact local-version pin matches nothing PyPI can serve."""
    specifier = Requirement("vllm==0.9.2+volta.3").specifier
    assert specifier.contains(Version("0.9.2+volta.3"))
    for other in ("0.9.2", "0.9.2+volta.2", "0.9.2+volta.3.empty", "0.10.0", "99.0", "0.9.2.post1"):
        assert not specifier.contains(Version(other), prereleases=True), other


def test_meta_wheel_is_byte_reproducible(tmp_path):
    first, _ = _build(tmp_path)
    digest = first.read_bytes()
    again, _ = _build(tmp_path)
    assert again == first and again.read_bytes() == digest
    assert first.with_name(first.name + ".sha256").read_text().split()[1] == first.name
