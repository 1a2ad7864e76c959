"""Numbered interruption points in the engine's mutating steps (a test hook).

Every step that changes a file, a ref or the work tree calls :func:`point`
first. In normal runs it does nothing; a test installs a hook that raises
:class:`Interrupted` (a BaseException, so no ``except Exception`` swallows
it, as nothing survives a kill) at the Nth point, then checks that a plain
rerun reaches the same end state and that nothing was lost.
"""

from __future__ import annotations

from typing import Callable

_hook: Callable[[str], None] | None = None


class Interrupted(BaseException):
    """Raised by a test hook to stand for a kill at an interruption point."""


def point(label: str) -> None:
    if _hook is not None:
        _hook(label)


def install(hook: Callable[[str], None] | None) -> None:
    global _hook
    _hook = hook
