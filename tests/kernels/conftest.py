"""Kernel tests: shared set-up and the "what ran where" report.

Every kernel test records two properties with ``record_property``:

- ``ran_on``: ``cpu-aot`` for ahead-of-time compilation on a machine with
  no GPU, else the GPU's name (``torch.cuda.get_device_name()``);
- ``forced_path``: which code path the test forced (e.g. ``sm_70
  fp32-dot, num_warps 4, num_stages 1``).

At the end of the run a table lists, per test, its outcome and those two
properties, so a green run says what it actually exercised. Skipped tests
show their reason.

The vLLM tree under test comes from VLLM_VOLTA_TREE. On a machine with no
GPU, Triton is pointed at a compile-only cuda:70 target *before* vLLM is
imported (vLLM disables Triton at import when no driver is active).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import _aot  # noqa: E402

_ROWS: list[tuple[str, str, str, str, str]] = []
_TREE_ERROR = ""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs a CUDA GPU; skipped with its reason without")
    global _TREE_ERROR
    if not os.environ.get("VLLM_VOLTA_TREE"):
        return
    try:
        _aot.prepare_tree()
    except RuntimeError as exc:
        _TREE_ERROR = str(exc)
        return
    if not _aot.has_cuda():
        try:
            _aot.install(70)
        except ImportError:
            # No Triton here: the AOT tests skip with that reason.
            pass


def pytest_collection_modifyitems(config, items):
    if os.environ.get("VLLM_VOLTA_TREE") and not _TREE_ERROR:
        return
    skip = pytest.mark.skip(reason=_TREE_ERROR or (
        "VLLM_VOLTA_TREE is not set: point it at the vLLM source "
        "tree to test (e.g. the patched upstream/ checkout)"))
    for item in items:
        item.add_marker(skip)


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup"
                                 and report.outcome != "passed"):
        props = dict(report.user_properties)
        outcome = report.outcome
        detail = props.get("forced_path", "")
        if report.skipped and isinstance(report.longrepr, tuple):
            detail = report.longrepr[2].removeprefix("Skipped: ")
        _ROWS.append((report.nodeid.split("::", 1)[-1], outcome,
                      str(props.get("ran_on", "-")), str(detail),
                      str(props.get("result", ""))))


def pytest_collectreport(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        _ROWS.append((report.nodeid or "(collection)", "skipped", "-",
                      report.longrepr[2].removeprefix("Skipped: "), ""))


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        terminalreporter.section("kernel tests: where each ran")
        for row in _ROWS:
            terminalreporter.write_line(" | ".join(row))
        return
    table = Table(title="kernel tests: where each ran, what it forced",
                  show_lines=False)
    for name in ("test", "outcome", "ran on", "forced path / skip reason",
                 "result"):
        table.add_column(name, overflow="fold")
    colours = {"passed": "green", "failed": "red", "skipped": "yellow"}
    for test, outcome, ran_on, detail, result in _ROWS:
        table.add_row(escape(test),
                      f"[{colours.get(outcome, 'white')}]{outcome}",
                      escape(ran_on), escape(detail), escape(result))
    console = Console(file=terminalreporter._tw._file,
                      width=max(terminalreporter._tw.fullwidth, 160),
                      force_terminal=terminalreporter._tw.hasmarkup)
    console.print(table)
