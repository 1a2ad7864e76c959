"""The dependency lock beside a vllm wheel (ship/lock.py) and its use by the meta wheel.

Resolution itself (uv against the package index) runs in tests/install; here
the lock's file format, its tie to one wheel, and the meta wheel's pins.
"""
import zipfile

import pytest

from vllm_volta.ship import lock
from vllm_volta.ship.artifacts import find_vllm_wheels, sha256_of, wheel_metadata
from vllm_volta.ship.meta import build_meta_wheel, spec_for

from .wheels import vllm_wheel

BODY = """\
numpy==2.0.2 ; python_full_version < '3.10' \\
    --hash=sha256:aaaa
numpy==2.2.6 ; python_full_version >= '3.10' \\
    --hash=sha256:bbbb \\
    --hash=sha256:cccc
transformers==4.53.3 \\
    --hash=sha256:dddd
"""


def write_lock(wheel, digest=None, version="0.9.2+volta.3"):
    path = lock.lock_path(wheel)
    path.write_text("# a lock\n" + BODY + f"vllm=={version} \\\n    --hash=sha256:{digest or sha256_of(wheel)}\n")
    return path


def test_lock_path_drops_the_wheel_tags(tmp_path):
    wheel = tmp_path / "vllm-0.9.2+volta.3-cp38-abi3-linux_x86_64.whl"
    assert lock.lock_path(wheel).name == "vllm-0.9.2+volta.3.lock.txt"


def test_read_pins_keeps_markers_and_drops_hashes(tmp_path):
    path = tmp_path / "x.lock.txt"
    path.write_text("# c\n" + BODY)
    pins = lock.read_pins(path)
    assert [p.requirement() for p in pins] == [
        'numpy==2.0.2 ; python_full_version < "3.10"',
        'numpy==2.2.6 ; python_full_version >= "3.10"',
        "transformers==4.53.3",
    ]


def test_read_pins_names_the_bad_line(tmp_path):
    path = tmp_path / "x.lock.txt"
    path.write_text("numpy=2.0 \\\n")
    with pytest.raises(lock.LockError, match=r"x\.lock\.txt: cannot read the line 'numpy=2\.0'.*nox -s lock"):
        lock.read_pins(path)


def test_check_lock_refuses_a_lock_of_another_build(tmp_path):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.3")
    with pytest.raises(lock.LockError, match="no lock beside"):
        lock.check_lock(lock.lock_path(wheel), wheel)
    write_lock(wheel, digest="0" * 64)
    with pytest.raises(lock.LockError, match="made for another build"):
        lock.check_lock(lock.lock_path(wheel), wheel)
    write_lock(wheel)
    lock.check_lock(lock.lock_path(wheel), wheel)


def test_runtime_requirements_leave_extras_out(tmp_path):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.3", requires=("torch==2.7.0", 'pandas; extra == "bench"'))
    assert lock.runtime_requirements(wheel) == ["torch==2.7.0"]


def test_meta_wheel_requires_the_locked_versions(tmp_path):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.3")
    path = write_lock(wheel)
    wheels, series = find_vllm_wheels(tmp_path)
    meta = build_meta_wheel(spec_for(wheels, series), tmp_path)
    requires = wheel_metadata(meta)["requires-dist"]
    assert requires == ["vllm==0.9.2+volta.3", 'numpy==2.0.2 ; python_full_version < "3.10"',
                        'numpy==2.2.6 ; python_full_version >= "3.10"', "transformers==4.53.3"]
    with zipfile.ZipFile(meta) as archive:
        assert archive.read("vllm_volta-0.9.2.3.dist-info/volta-lock.txt").decode() == path.read_text()


def test_meta_wheel_refuses_a_stale_lock(tmp_path):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.3")
    write_lock(wheel, digest="f" * 64)
    wheels, series = find_vllm_wheels(tmp_path)
    with pytest.raises(lock.LockError, match="another build"):
        spec_for(wheels, series)
