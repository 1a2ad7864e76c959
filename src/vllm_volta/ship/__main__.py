"""``python -m vllm_volta.ship <verb>``: the same as ``python -m vllm_volta ship <verb>``."""

import sys

from vllm_volta.ship.cli import main

sys.exit(main(sys.argv[1:]))
