from vllm_volta.series import prove, stack

from .synth import FIELDS, commit_change, lines, make_root

quiet = lambda *_: None  # noqa: E731

TEST_FILE = '''import os
from pathlib import Path

TREE = Path(os.environ["VLLM_VOLTA_TREE"])


def test_flag():
    assert "LINE 5" in (TREE / "a.py").read_text()


def test_always():
    assert True
'''


def test_prove_tells_proven_from_unproven(tmp_path):
    root = make_root(tmp_path, {"a.py": lines(10)})
    (root / "tests" / "test_tree.py").write_text(TEST_FILE)
    commit_change(root, "proven: edit a", {"a.py": lines(10).replace("line 5", "LINE 5")})
    # a second patch whose named test passes on the pristine tree too
    commit_change(root, "unproven: add b", {"b.py": "b\n"})
    stack.refresh(root, progress=quiet)
    for name in sorted((root / "patches").iterdir()):
        text = name.read_text()
        test = "tests/test_tree.py::test_flag" if "proven: edit" in text and "unproven" not in text else "tests/test_tree.py::test_always"
        name.write_text(text.replace("Test: tests/conftest.py::nothing", f"Test: {test}"))
    # re-apply so the branch matches the edited patch files
    stack.apply(root, force=True, progress=quiet)
    proofs = {p.name: p for p in prove.prove(root)}
    assert proofs["0001-proven-edit-a.patch"].ok
    assert (proofs["0001-proven-edit-a.patch"].pristine, proofs["0001-proven-edit-a.patch"].patched) == ("fail", "pass")
    assert not proofs["0002-unproven-add-b.patch"].ok
    assert proofs["0002-unproven-add-b.patch"].pristine == "pass"
    assert FIELDS  # the synthetic header carries every required field
