"""Rich tables for the terminal and Markdown for files, shared by every wing."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table


def _width(stream) -> int | None:
    """Rich's own width on a terminal; a wide one in logs (CI), unless COLUMNS says."""
    if os.environ.get("COLUMNS") or stream.isatty():
        return None
    return 160


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))

_STYLES = {
    "applied": "green",
    "already applied": "cyan",
    "conflict": "bold red",
    "not reached": "yellow",
    "written": "green",
    "removed": "yellow",
    "unchanged": "dim",
}


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        cells = [str(c) for c in row]
        t.add_row(*cells, style=next((_STYLES[c] for c in cells if c in _STYLES), None))
    return t


def show(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    console.print(table(title, columns, rows))


def markdown(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
