"""Copies of files the engine is told to overwrite (``--force``, ``--accept``), named in its output.

They go under the checkout's own git directory (``.git/vllm-volta-backup/<stamp>/``),
so they are never committed by accident and survive a removed upstream/;
outside a git checkout, under the cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from . import faults
from .upstream import cache_dir


def backup_root(root: Path) -> Path:
    git = root / ".git"
    if git.is_dir():
        return git / "vllm-volta-backup"
    from .guard import checkout_key

    return cache_dir() / "backup" / checkout_key(root)


def keep(root: Path, rel_paths: list[str], *, why: str) -> Path:
    """Copy ``rel_paths`` (relative to ``root``, existing ones) into a new backup folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = backup_root(root)
    target = base / stamp
    n = 1
    while target.exists():
        n += 1
        target = base / f"{stamp}-{n}"
    for rel in rel_paths:
        src = root / rel
        if not src.is_file():
            continue
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        faults.point(f"backup {rel}")
        shutil.copy2(src, dst)
    target.mkdir(parents=True, exist_ok=True)
    (target / "WHY").write_text(why + "\n", encoding="utf-8")
    return target
