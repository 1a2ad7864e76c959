"""Forbidden changes from the user's strategy note ("Patchs INTERDITS").

Each rule reads a patch's diff and returns the violations it finds. The
note forbids forcing the Triton MLA backend (it gave garbage output on V100)
and intrusive changes to the CUDA attention kernels.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Callable, Iterator

from . import patchfile


@dataclasses.dataclass(frozen=True)
class Violation:
    rule: str
    path: str
    detail: str


@dataclasses.dataclass(frozen=True)
class FileChange:
    old_path: str
    new_path: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


def file_changes(diff_text: str) -> Iterator[FileChange]:
    old = new = ""
    added: list[str] = []
    removed: list[str] = []
    started = False
    for line in diff_text.splitlines():
        if line.startswith("diff --git "):
            if started:
                yield FileChange(old, new, tuple(added), tuple(removed))
            started = True
            a, _, b = line[len("diff --git ") :].partition(" b/")
            old, new = a.removeprefix("a/"), b
            added, removed = [], []
        elif line.startswith("--- ") or line.startswith("+++ "):
            continue
        elif line.startswith("rename from "):
            old = line[len("rename from ") :]
        elif line.startswith("rename to "):
            new = line[len("rename to ") :]
        elif line.startswith("+"):
            added.append(line[1:])
        elif line.startswith("-"):
            removed.append(line[1:])
    if started:
        yield FileChange(old, new, tuple(added), tuple(removed))


# -- rule: never force the Triton MLA backend ----------------------------

# The ways a patch could make Triton MLA the backend regardless of the
# hardware: set VLLM_ATTENTION_BACKEND to it, assign it as the selected
# backend, or return / point at the Triton MLA backend classes.
_FORCE_MLA = (
    re.compile(r"VLLM_ATTENTION_BACKEND\W.*TRITON_MLA"),
    re.compile(r"(?<![=!<>])=\s*_Backend\.TRITON_MLA(_VLLM_V1)?\b"),
    re.compile(r"triton_mla\.TritonMLABackend"),
)


def _is_code(path: str) -> bool:
    return path.endswith(".py") and not path.startswith("tests/")


def no_forced_triton_mla(change: FileChange) -> list[Violation]:
    if not _is_code(change.new_path or change.old_path):
        return []
    # Lines only moved within the file (removed and added alike) do not count.
    net = Counter(line.strip() for line in change.added)
    net.subtract(line.strip() for line in change.removed)
    found = []
    for line, count in net.items():
        if count > 0 and any(p.search(line) for p in _FORCE_MLA):
            found.append(Violation("no-forced-triton-mla", change.new_path, line))
    return found


# -- rule: leave the CUDA attention kernels alone -------------------------

PROTECTED_KERNEL_DIR = "csrc/attention/"


def no_attention_kernel_edits(change: FileChange) -> list[Violation]:
    for path in (change.old_path, change.new_path):
        if path.startswith(PROTECTED_KERNEL_DIR):
            return [
                Violation(
                    "no-attention-kernel-edits",
                    path,
                    f"the strategy note forbids rewriting the CUDA attention kernels under {PROTECTED_KERNEL_DIR}",
                )
            ]
    return []


RULES: tuple[Callable[[FileChange], list[Violation]], ...] = (
    no_forced_triton_mla,
    no_attention_kernel_edits,
)


def violations(patch: patchfile.Patch) -> list[Violation]:
    found: list[Violation] = []
    for change in file_changes(patch.diff):
        for rule in RULES:
            found.extend(rule(change))
    return found
