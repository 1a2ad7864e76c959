"""`python -m vllm_volta build ...` verbs that need no build."""

from __future__ import annotations

import json

from vllm_volta.build import cli, verify

from .wheels import make_wheel


def test_provenance_of_a_wheel(tmp_path, capsys):
    wheel = make_wheel(tmp_path, "0.9.2+volta.3.empty", {}, route="empty", requires=(), tag="py3-none-any")
    assert cli.main(["provenance", str(wheel)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["version"] == "0.9.2+volta.3.empty" and record["kernel_route"] == "empty"


def test_verify_verb_fails_without_sha256_and_passes_with_it(tmp_path):
    wheel = make_wheel(tmp_path, "0.9.2+volta.3.empty", {}, route="empty", requires=(), tag="py3-none-any")
    assert cli.main(["verify", str(wheel), "--cuobjdump", "/nonexistent"]) == 1
    verify.write_sha256(wheel)
    assert cli.main(["verify", str(wheel), "--cuobjdump", "/nonexistent"]) == 0


def test_toolchain_verb_refuses_cuda_13(tmp_path):
    from .test_toolchain import fake_toolkit
    root = fake_toolkit(tmp_path / "cuda-13.0", "13.0.88")
    assert cli.main(["toolchain", "--cuda-home", str(root)]) == 1
