"""refresh --onto on the real vLLM 0.9.2 sdist (cached once, no index needed): the release import
reproduces the pinned base, and a dry run of the series onto its own base finds every patch clean."""

import shutil
from pathlib import Path

import pygit2
import pytest

from vllm_volta.series import rebase, releases, upstream

ROOT = Path(__file__).resolve().parents[2]
quiet = lambda *_: None  # noqa: E731

pytestmark = pytest.mark.integration


def _release_of_pin(pin: upstream.Pin) -> releases.Release:
    # What the index lists for the pinned release (upload 2025-07-08 04:49 UTC).
    return releases.Release(pin.version, pin.sdist.filename, pin.sdist.size, pin.sdist.sha256,
                            "2025-07-08T04:49:01+00:00")


def test_a_release_import_reproduces_the_pinned_base(tmp_path):
    pin = upstream.Pin.load(ROOT)
    rpin = rebase.release_pin(pin, _release_of_pin(pin), commit=pin.commit)
    assert (rpin.sdist.author, rpin.sdist.email, rpin.sdist.date) == (pin.sdist.author, pin.sdist.email, pin.sdist.date)
    sdist = upstream.fetch_sdist(rpin, quiet)
    repo = pygit2.init_repository(str(tmp_path / "r"), bare=True)
    oid = upstream.import_base(repo, sdist, rpin, upstream.release_ref(pin.version))
    assert str(oid) == pin.sdist.commit
    assert str(repo.references[upstream.release_ref(pin.version)].target) == pin.sdist.commit


def test_a_dry_run_onto_the_pinned_base_is_all_clean(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(ROOT / "pin.toml", root / "pin.toml")
    for sub in ("series", "patches", "tests"):
        shutil.copytree(ROOT / sub, root / sub, ignore=shutil.ignore_patterns("__pycache__"))
    rep = rebase.dry_run(root, upstream.BASE_REF, progress=quiet)
    assert rep.onto.source == rebase.SOURCE_REF and rep.onto.base == upstream.Pin.load(root).sdist.commit
    assert {r.klass for r in rep.rows} <= {rebase.CLEAN}


@pytest.mark.parametrize("version", ["0.10.1.1", "0.10.2"])
def test_the_replay_follows_vllm_config_py_into_its_package(tmp_path, version):
    """Issue 13, case 8: upstream moved vllm/config.py to vllm/config/__init__.py (among >1000
    other file moves); the patches editing it merge there, as `git cherry-pick` does."""
    try:
        releases.find(version, progress=quiet)
    except releases.ReleaseError as exc:
        pytest.skip(f"the package index cannot be read here: {exc}")
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(ROOT / "pin.toml", root / "pin.toml")
    for sub in ("series", "patches", "tests"):
        shutil.copytree(ROOT / sub, root / sub, ignore=shutil.ignore_patterns("__pycache__"))
    rep = rebase.dry_run(root, version, progress=quiet)
    touching = [r for r in rep.rows if "vllm/config.py" in r.files]
    assert touching, "no patch of the series edits vllm/config.py any more"
    for row in touching:
        assert row.klass != rebase.MISSING, f"{row.name}: {row.detail}"
        assert "vllm/config.py" not in row.detail or "the merge followed it" in row.detail, f"{row.name}: {row.detail}"
    mla = [r for r in touching if "disable-mla" in r.name]
    assert mla and mla[0].klass in (rebase.MERGED, rebase.CONFLICT)
    if mla[0].klass == rebase.CONFLICT:  # only its real vllm/platforms/cuda.py conflict
        assert mla[0].detail.startswith("vllm/platforms/cuda.py: hunk")
    assert [r.klass for r in touching if "bfloat16" in r.name] == [rebase.MERGED]
