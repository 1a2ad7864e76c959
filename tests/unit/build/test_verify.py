"""Wheel verification on synthetic wheels: METADATA, RECORD, provenance, ELF checks.

The sm_70 check on real device code is in tests/integration/test_build_smoke.py
(it needs a CUDA 12 nvcc).
"""

from __future__ import annotations

import zipfile

import pytest

from vllm_volta.build import elf, provenance, verify

from .wheels import compile_so, make_wheel

V = "0.9.2+volta.3"


def _names(report):
    return [name for name, ok, _ in report.checks if not ok]


def test_good_empty_wheel_passes(tmp_path):
    wheel = make_wheel(tmp_path, V + ".empty", {}, route="empty", requires=(), tag="py3-none-any")
    report = verify.verify_wheel(wheel, version=V + ".empty", route="empty", cuobjdump=None,
                                 host_prefixes=[str(tmp_path)])
    assert report.ok, report.problems


def test_wrong_version_fails(tmp_path):
    wheel = make_wheel(tmp_path, V, {}, route="empty", requires=(), tag="py3-none-any")
    report = verify.verify_wheel(wheel, version="0.9.2+volta.4", route="empty", cuobjdump=None,
                                 host_prefixes=[])
    assert "metadata version" in _names(report)


def test_tampered_member_breaks_record(tmp_path):
    wheel = make_wheel(tmp_path, V, {"vllm/x.py": b"a = 1\n"}, route="empty", requires=(),
                       tag="py3-none-any")
    tampered = tmp_path / "t" / wheel.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"a = 2\n" if item.filename == "vllm/x.py" else data)
    report = verify.verify_wheel(tampered, version=V, route="empty", cuobjdump=None, host_prefixes=[])
    assert "RECORD" in _names(report)


def test_missing_provenance_fails(tmp_path):
    wheel = make_wheel(tmp_path, V, {}, route="empty", requires=(), tag="py3-none-any",
                       with_provenance=False)
    report = verify.verify_wheel(wheel, version=V, route="empty", cuobjdump=None, host_prefixes=[])
    assert "provenance" in _names(report)


def test_kernel_route_needs_torch_pin_abi3_and_the_three_extensions(tmp_path):
    wheel = make_wheel(tmp_path, V, {}, route="source", requires=("torch>=2.7",), tag="py3-none-any")
    report = verify.verify_wheel(wheel, version=V, route="source", cuobjdump=None, host_prefixes=[])
    assert {"requires torch==2.7.0", "wheel tag cp38-abi3", "extensions present"} <= set(_names(report))


def test_extension_without_sm70_fails_and_rpath_and_host_path_are_caught(tmp_path):
    host = compile_so(tmp_path, "host", 'const char* where = "%s/csrc/x.cpp";\n' % tmp_path,
                      f"-Wl,-rpath,{tmp_path}/lib")
    if host is None:
        pytest.skip("gcc not found: cannot make a real shared object here")
    files = {name: host for name in verify.KERNEL_EXTENSIONS}
    wheel = make_wheel(tmp_path, V, files, route="source")
    report = verify.verify_wheel(wheel, version=V, route="source", cuobjdump=None,
                                 host_prefixes=[str(tmp_path)])
    failed = _names(report)
    # _C and _moe_C must carry device code for sm_70; a host-only object has none.
    assert "vllm/_C.abi3.so sm_70" in failed and "vllm/_moe_C.abi3.so sm_70" in failed
    assert "vllm/cumem_allocator.abi3.so sm_70" not in failed  # host-only by design
    assert "vllm/_C.abi3.so RPATH/RUNPATH" in failed
    assert "vllm/_C.abi3.so host paths" in failed


def test_elf_reader_sees_runpath_and_needed(tmp_path):
    data = compile_so(tmp_path, "rp", "#include <stdio.h>\nint f(void) { return puts(\"x\"); }\n",
                      "-Wl,--enable-new-dtags,-rpath,/opt/somewhere")
    if data is None:
        pytest.skip("gcc not found: cannot make a real shared object here")
    dyn = elf.read_dynamic(data)
    assert dyn.runpath == ("/opt/somewhere",) and dyn.rpath == ()
    assert "libc.so.6" in dyn.needed


def test_sha256_file_beside_the_wheel(tmp_path):
    wheel = make_wheel(tmp_path, V, {}, route="empty", requires=(), tag="py3-none-any")
    side = verify.write_sha256(wheel)
    assert side.read_text().endswith(f"  {wheel.name}\n")
    assert verify.check_sha256(wheel)[0]
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    assert not verify.check_sha256(wheel)[0]


def test_provenance_reader_in_the_wheel_reads_installed_metadata(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path, V, {}, route="empty", requires=(), tag="py3-none-any")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    monkeypatch.syspath_prepend(str(site))
    namespace: dict = {}
    exec((site / "vllm" / "_volta_provenance.py").read_text(), namespace)
    import importlib.metadata as md
    monkeypatch.setattr(md, "distribution", lambda name: md.PathDistribution(
        next(site.glob("vllm-*.dist-info"))))
    assert namespace["read"]()["version"] == V
    assert provenance.read_wheel(wheel)["kernel_route"] == "empty"


def test_add_files_copies_members_raw_and_from_another_wheel(tmp_path):
    from vllm_volta.build import wheelfile
    big = bytes(range(256)) * 4096
    wheel = make_wheel(tmp_path, V, {"vllm/big.bin": big}, route="empty", requires=(), tag="py3-none-any")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = make_wheel(other_dir, "0.9.2", {"vllm/ext.bin": b"\x7fELF fake"}, route="empty",
                       requires=(), tag="py3-none-any")
    wheelfile.add_files(wheel, {"vllm/new.txt": b"new"}, raw_from={"vllm/ext.bin": other})
    with zipfile.ZipFile(wheel) as zf:
        assert zf.testzip() is None
        assert zf.read("vllm/big.bin") == big and zf.read("vllm/new.txt") == b"new"
        assert zf.read("vllm/ext.bin") == b"\x7fELF fake"
    report = verify.verify_wheel(wheel, version=V, route="empty", cuobjdump=None, host_prefixes=[])
    assert "RECORD" not in [n for n, ok, _ in report.checks if not ok]
