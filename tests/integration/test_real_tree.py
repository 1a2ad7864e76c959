"""The series on the real vLLM 0.9.2 tree (the PyPI sdist, downloaded once into the cache)."""

import shutil
from pathlib import Path

import pytest

from vllm_volta.series import check, model, stack, upstream

ROOT = Path(__file__).resolve().parents[2]
quiet = lambda *_: None  # noqa: E731

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pristine_copy(tmp_path_factory):
    """A copy of this checkout's series with its own upstream/ made from the sdist."""
    root = tmp_path_factory.mktemp("real") / "proj"
    root.mkdir()
    shutil.copy(ROOT / "pin.toml", root / "pin.toml")
    shutil.copytree(ROOT / "series", root / "series")
    shutil.copytree(ROOT / "patches", root / "patches")
    shutil.copytree(ROOT / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for sub in ("patches", "series")
        for p in sorted((root / sub).iterdir())
    }


def test_base_commit_is_reproducible(pristine_copy):
    up = upstream.materialize(pristine_copy, progress=quiet)
    pin = upstream.Pin.load(pristine_copy)
    assert up.source == upstream.SOURCE_SDIST
    assert str(up.base.id) == pin.sdist.commit
    names = {e.name for e in up.base.tree}
    assert "PKG-INFO" not in names and "setup.cfg" not in names and "vllm.egg-info" not in names
    assert "_version.py" not in {e.name for e in up.base.tree["vllm"]}


def test_series_applies_on_pristine_and_refresh_is_a_byte_no_op(pristine_copy):
    before = _snapshot(pristine_copy)
    result = stack.apply(pristine_copy, progress=quiet)
    series = model.Series.load(pristine_copy)
    assert [o.state for o in result.outcomes] == [stack.APPLIED] * len(series.entries)
    assert stack.refresh(pristine_copy, progress=quiet).changed == []
    assert _snapshot(pristine_copy) == before
    again = stack.apply(pristine_copy, progress=quiet)
    assert {o.state for o in again.outcomes} <= {stack.ALREADY}


def test_check_passes_on_the_series():
    assert [f"{p.where}: {p.what}" for p in check.check(ROOT)] == []


def test_wrong_sdist_hash_is_refused_and_nothing_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_VOLTA_CACHE", str(tmp_path))
    pin = upstream.Pin.load(ROOT)
    bad = tmp_path / "sdist" / pin.sdist.filename
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the sdist")
    with pytest.raises(upstream.UpstreamError, match="is not the pinned"):
        upstream.fetch_sdist(pin, quiet)
    assert bad.read_bytes() == b"not the sdist"
