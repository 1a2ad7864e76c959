#!/usr/bin/env python3
"""Validate a V100 host after `pip install vllm-volta`: a thin wrapper for fleet hosts.

Copy this repository's `scripts/` and `src/` to the host (or clone it), then run
with the Python of the environment that holds vllm:

    python scripts/validate_v100.py --dry-run          # print the plan
    python scripts/validate_v100.py --report r.json    # run it; exit 1 on any failure

It is `python -m vllm_volta ship validate` without installing the tooling: the
validate kit needs only the standard library.
"""

import sys
from pathlib import Path

try:
    from vllm_volta.ship.cli import main
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from vllm_volta.ship.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    verb = args[0] if args and args[0] in ("doctor", "judge", "validate") else None
    sys.exit(main(args if verb else ["validate", *args]))
