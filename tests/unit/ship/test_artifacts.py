import zipfile

import pytest

from vllm_volta.ship.artifacts import (
    ArtifactError,
    check_vllm_wheel,
    find_vllm_wheels,
    parse_series_version,
    read_sidecar,
)

from .wheels import vllm_wheel


@pytest.mark.parametrize(
    ("text", "n", "labels", "empty", "release"),
    [
        ("0.9.2+volta.1", "1", (), False, True),
        ("0.9.2+volta.12.cu124", "12", ("cu124",), False, True),
        ("0.9.2+volta.3.empty", "3", ("empty",), True, True),
        ("0.9.2+volta.3.1", "3.1", (), False, True),
        ("0.9.2+volta.3.1.dev2.g1a2b3c4.empty", "3.1", ("dev2", "g1a2b3c4", "empty"), True, False),
    ],
)
def test_series_version_parts(text, n, labels, empty, release):
    series = parse_series_version(text)
    assert (series.n, series.labels, series.is_empty_build, series.is_release) == (n, labels, empty, release)


@pytest.mark.parametrize("text", ["0.9.2", "0.9.2+cu124", "0.9.3+volta.1", "0.9.2+voltage.1", "0.9.2+volta"])
def test_not_a_series_version(text):
    with pytest.raises(ArtifactError, match="not a vllm-volta build"):
        parse_series_version(text)


def test_kind_labels():
    assert parse_series_version("0.9.2+volta.1.cu124").kind == "CUDA 12.4 build"
    assert parse_series_version("0.9.2+volta.1.dev3.gabc").kind == "CUDA build, untagged dev build"
    assert "VLLM_TARGET_DEVICE=empty" in parse_series_version("0.9.2+volta.1.empty").kind


def test_checked_wheel(tmp_path):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.2")
    artifact, series = check_vllm_wheel(wheel)
    assert artifact.name == "vllm" and str(artifact.version) == "0.9.2+volta.2"
    assert artifact.sha256 == read_sidecar(wheel) and series.n == "2"


def test_bare_digest_sidecar(tmp_path):
    wheel = vllm_wheel(tmp_path)
    sidecar = wheel.with_name(wheel.name + ".sha256")
    sidecar.write_text(sidecar.read_text().split()[0] + "\n")
    assert check_vllm_wheel(wheel)[0].sha256 == sidecar.read_text().strip()


def test_missing_sidecar_says_how_to_fix(tmp_path):
    wheel = vllm_wheel(tmp_path, sidecar=False)
    with pytest.raises(ArtifactError, match="sha256sum"):
        check_vllm_wheel(wheel)


def test_stale_sidecar_refused(tmp_path):
    wheel = vllm_wheel(tmp_path)
    wheel.with_name(wheel.name + ".sha256").write_text("0" * 64 + f"  {wheel.name}\n")
    with pytest.raises(ArtifactError, match="changed after it was built"):
        check_vllm_wheel(wheel)


def test_sidecar_of_another_file_refused(tmp_path):
    wheel = vllm_wheel(tmp_path)
    wheel.with_name(wheel.name + ".sha256").write_text("a" * 64 + "  other.whl\n")
    with pytest.raises(ArtifactError, match="belongs to another file"):
        check_vllm_wheel(wheel)


def test_renamed_wheel_refused(tmp_path):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.1")
    renamed = wheel.with_name(wheel.name.replace("volta.1", "volta.2"))
    wheel.rename(renamed)
    with pytest.raises(ArtifactError, match="renamed after it was built"):
        check_vllm_wheel(renamed)


def test_label_must_match_content(tmp_path):
    with pytest.raises(ArtifactError, match="must contain vllm/_C"):
        check_vllm_wheel(vllm_wheel(tmp_path / "a", "0.9.2+volta.1", cuda_ext=False))
    with pytest.raises(ArtifactError, match="labelled .empty"):
        check_vllm_wheel(vllm_wheel(tmp_path / "b", "0.9.2+volta.1.empty", cuda_ext=True))


def test_one_version_per_dist(tmp_path):
    vllm_wheel(tmp_path, "0.9.2+volta.1")
    vllm_wheel(tmp_path, "0.9.2+volta.2")
    with pytest.raises(ArtifactError, match="several versions"):
        find_vllm_wheels(tmp_path)


def test_empty_dist(tmp_path):
    with pytest.raises(ArtifactError, match="no vllm-"):
        find_vllm_wheels(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        find_vllm_wheels(tmp_path / "nope")


def test_wheel_is_valid_zip_with_record(tmp_path):
    wheel = vllm_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        assert archive.testzip() is None
        assert archive.namelist()[-1].endswith(".dist-info/RECORD")
