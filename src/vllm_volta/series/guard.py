"""One run at a time per checkout (and per cache): an flock that dies with its process.

The lock files live in the cache (``locks/``), never in the checkout. A
second run waits up to ``VLLM_VOLTA_LOCK_WAIT`` seconds (default 600) for the
first, saying who holds the lock, then refuses. A killed run leaves nothing
to clean: the kernel drops its flock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

from .upstream import Progress, UpstreamError, cache_dir

_held: dict[tuple[str, int], tuple[int, int]] = {}  # (path, thread) -> (fd, depth): reentrant per thread


class Busy(UpstreamError):
    """Another run holds the lock for too long."""


def lock_path(name: str) -> Path:
    return cache_dir() / "locks" / f"{name}.lock"


def checkout_key(root: Path | str) -> str:
    return "checkout-" + hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]


@contextlib.contextmanager
def hold(name: str, what: str, progress: Progress = print, *, wait: float | None = None):
    """Hold the lock ``name`` (``what`` says what it guards, for the messages)."""
    path = lock_path(name)
    key = (str(path), threading.get_ident())
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if wait is None:
            wait = float(os.environ.get("VLLM_VOLTA_LOCK_WAIT", "600"))
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(path)
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"{what} is in use by another vllm-volta run ({holder}, lock {path}); "
                        "let it finish, then run again"
                    ) from None
                if not told:
                    progress(f"waiting for another vllm-volta run on {what} ({holder}) ...")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}\n".encode())
        _held[key] = (fd, 1)
        try:
            yield
        finally:
            del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "pid unknown"
    except OSError:
        return "pid unknown"


def checkout(root: Path | str, progress: Progress = print):
    """The lock of one vllm-volta checkout (apply, refresh, --onto and friends)."""
    return hold(checkout_key(root), f"the checkout {Path(root).resolve()}", progress)
