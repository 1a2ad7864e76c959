import pytest

from vllm_volta.series import check, patchfile, policy, stack

from .synth import commit_change, lines, make_root

quiet = lambda *_: None  # noqa: E731

CUDA_PY = (
    "def select(selected_backend, block_size):\n"
    "    if selected_backend is None:\n"
    "        return 'flash'\n"
    "    return str(selected_backend)\n"
)


@pytest.fixture
def root(tmp_path):
    root = make_root(tmp_path, {"vllm/platforms/cuda.py": CUDA_PY, "csrc/attention/paged.cu": lines(10), "a.py": lines(5)})
    commit_change(root, "good: a harmless change", {"a.py": "changed\n"})
    stack.refresh(root, progress=quiet)
    return root


def problems(root):
    return [f"{p.where}: {p.what}" for p in check.check(root)]


def test_clean_series_passes(root):
    assert problems(root) == []


def test_missing_header_field_is_reported(root):
    p = root / "patches" / "0001-good-a-harmless-change.patch"
    p.write_text(p.read_text().replace("Drop-When: never\n", ""))
    assert any("Drop-When" in x for x in problems(root))


def test_non_canonical_text_is_reported(root):
    p = root / "patches" / "0001-good-a-harmless-change.patch"
    p.write_text(p.read_text() + "-- \n2.39.5\n")
    assert any("not canonical" in x for x in problems(root))


def test_unlisted_and_missing_patches_are_reported(root):
    (root / "patches" / "0002-stray.patch").write_text("x")
    (root / "series" / "series").write_text((root / "series" / "series").read_text() + "0003-gone.patch\n")
    found = problems(root)
    assert any("0002-stray.patch: not listed" in x for x in found)
    assert any("0003-gone.patch does not exist" in x for x in found)


def test_numbering_must_be_contiguous(root):
    old = root / "patches" / "0001-good-a-harmless-change.patch"
    old.rename(root / "patches" / "0002-good-a-harmless-change.patch")
    s = root / "series" / "series"
    s.write_text(s.read_text().replace("0001-", "0002-"))
    assert any("expected the name 0001-good-a-harmless-change.patch" in x for x in problems(root))


def test_policy_rejects_edits_of_cuda_attention_kernels(root):
    commit_change(root, "bad: tune paged attention kernel", {"csrc/attention/paged.cu": lines(10).replace("line 3", "fast 3")})
    stack.refresh(root, progress=quiet)
    assert any("no-attention-kernel-edits" in x and "csrc/attention/paged.cu" in x for x in problems(root))


@pytest.mark.parametrize(
    "line",
    [
        "    os.environ['VLLM_ATTENTION_BACKEND'] = 'TRITON_MLA'\n",
        "    selected_backend = _Backend.TRITON_MLA\n",
        "    return 'vllm.attention.backends.triton_mla.TritonMLABackend'\n",
    ],
)
def test_policy_rejects_forcing_triton_mla(root, line):
    forced = CUDA_PY.replace("    if selected_backend is None:\n", line + "    if selected_backend is None:\n")
    commit_change(root, "bad: force triton mla", {"vllm/platforms/cuda.py": forced})
    stack.refresh(root, progress=quiet)
    assert any("no-forced-triton-mla" in x for x in problems(root))


def test_policy_allows_refusing_triton_mla(root):
    refusal = CUDA_PY.replace(
        "    if selected_backend is None:\n",
        "    if selected_backend == _Backend.TRITON_MLA:\n"
        "        raise ValueError('Triton MLA cannot run on Volta')\n"
        "    if selected_backend is None:\n",
    )
    commit_change(root, "ok: refuse triton mla on volta", {"vllm/platforms/cuda.py": refusal})
    stack.refresh(root, progress=quiet)
    assert problems(root) == []


def test_policy_ignores_moved_lines():
    diff = (
        "diff --git a/vllm/x.py b/vllm/x.py\n--- a/vllm/x.py\n+++ b/vllm/x.py\n@@ -1,3 +1,3 @@\n"
        "-    return 'vllm.attention.backends.triton_mla.TritonMLABackend'\n"
        " pass\n"
        "+    return 'vllm.attention.backends.triton_mla.TritonMLABackend'\n"
    )
    patch = patchfile.Patch("a", "a@b", 0, 0, "s", "", diff)
    assert policy.violations(patch) == []


def test_patch_round_trip_and_trailers(root):
    text = (root / "patches" / "0001-good-a-harmless-change.patch").read_text()
    patch = patchfile.parse(text)
    assert patchfile.emit(patch) == text
    assert patch.fields["Tier"] == "critical"
    assert patch.fields["Upstream-Status"] == "inappropriate (Volta-only)"
    assert patchfile.parse_trailers("x\n\nKey: a\n  continued\nOther: b") == {"Key": "a continued", "Other": "b"}
