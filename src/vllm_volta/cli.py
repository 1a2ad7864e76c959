"""One entry point: `python -m vllm_volta <wing> <verb> ...`; each wing has its own cli."""

from __future__ import annotations

import importlib
import sys

WINGS = {
    "series": "vllm_volta.series.cli",
    "build": "vllm_volta.build.cli",
    "ship": "vllm_volta.ship.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in WINGS:
        print(f"usage: python -m vllm_volta {{{','.join(WINGS)}}} <verb> [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(WINGS[argv[0]])
    return int(module.main(argv[1:]) or 0)
