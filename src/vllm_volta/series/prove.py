"""`prove`: every patch's named test fails on the pristine tree and passes on the patched one.

The pristine tree is the base commit exported to a temporary directory; the
patched tree is branch volta (upstream/ after `apply`). All named tests run
in one pytest process per tree; results are read back from JUnit XML.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from . import model, stack, upstream, worktree

PASS, FAIL, SKIP, MISSING = "pass", "fail", "skip", "not run"


@dataclasses.dataclass
class Proof:
    name: str
    test: str
    pristine: str
    patched: str

    @property
    def ok(self) -> bool:
        return self.pristine == FAIL and self.patched == PASS


def _run(tree: Path, nodes: list[str], root: Path, xml: Path) -> dict[tuple[str, str], str]:
    env = dict(os.environ, VLLM_VOLTA_TREE=str(tree), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *nodes]
    subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[tuple[str, str], str] = {}
    if not xml.exists():
        return results
    for case in ET.parse(xml).getroot().iter("testcase"):
        state = PASS
        if case.find("failure") is not None or case.find("error") is not None:
            state = FAIL
        elif case.find("skipped") is not None:
            state = SKIP
        results[(case.get("classname", ""), case.get("name", ""))] = state
    return results


def _select(results: dict[tuple[str, str], str], test: str) -> list[str]:
    path, _, name = test.partition("::")
    module = path.removesuffix(".py").replace("/", ".")
    name = name.split("::")[-1]
    return [
        state
        for (cls, case), state in results.items()
        if (cls == module or cls.startswith(module + ".")) and (not name or case == name or case.startswith(name + "["))
    ]


def _summarize(states: list[str], *, want_fail: bool) -> str:
    if not states:
        return MISSING
    if FAIL in states:
        return FAIL
    if SKIP in states:
        return SKIP
    return PASS


def prove(root: Path | str) -> list[Proof]:
    root = Path(root).resolve()
    series = model.Series.load(root)
    up = upstream.open_upstream(root)
    if up is None or len(stack.chain(up)) != len(series.entries):
        raise stack.StackError("the series is not applied in upstream/; run `nox -s apply` first")
    tests = {e.name: series.read(e).fields.get("Test", "") for e in series.entries}
    nodes = sorted({t for t in tests.values() if t})
    with tempfile.TemporaryDirectory(prefix="vllm-volta-pristine-") as tmp:
        pristine = Path(tmp) / "tree"
        # Not checkout_tree(directory=...): libgit2 writes upstream/'s index with it.
        worktree.export(up.repo, up.base.tree, pristine)
        before = _run(pristine, nodes, root, Path(tmp) / "pristine.xml")
        after = _run(up.path, nodes, root, Path(tmp) / "patched.xml")
    return [
        Proof(name, test, _summarize(_select(before, test), want_fail=True),
              _summarize(_select(after, test), want_fail=False))
        for name, test in tests.items()
    ]
