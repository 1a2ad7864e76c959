"""Run vLLM's setup.py and show how far it is: ``[n/43]`` and the elapsed time.

Everything the build prints goes to a log file; the terminal gets one line
per compile step (ninja's ``[n/N]``) with the elapsed time, a heartbeat line
when a single step runs for minutes (selective_scan_fwd takes ~9 on two
cores), and the log's last lines when the build fails.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

Progress = Callable[[str], None]

STEP = re.compile(r"^\[(\d+)/(\d+)\]\s+(.*)$")
HEARTBEAT_S = 120


class BuildFailed(RuntimeError):
    def __init__(self, message: str, log: Path):
        super().__init__(message)
        self.log = log


def fmt_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _short(action: str) -> str:
    # "Building CUDA object CMakeFiles/_C.dir/csrc/cache_kernels.cu.o" -> "_C: csrc/cache_kernels.cu"
    m = re.search(r"CMakeFiles/([^/]+)\.dir/(.+?)\.o\b", action)
    if m:
        return f"{m.group(1)}: {m.group(2)}"
    return action[:100]


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path,
        progress: Progress = print) -> dict:
    """Run ``cmd``; return {"seconds", "steps", "total"}; BuildFailed on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    state = {"steps": 0, "total": 0, "last": start, "label": "configuring"}
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(15):
            now = time.monotonic()
            if now - state["last"] >= HEARTBEAT_S:
                where = f"[{state['steps']}/{state['total']}]" if state["total"] else "[-/-]"
                progress(f"{where} {fmt_elapsed(now - start)} elapsed, still compiling "
                         f"(last finished: {state['label']})")
                state["last"] = now

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    with log.open("w") as out:
        out.write(f"$ {' '.join(cmd)}\n(cwd {cwd})\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            m = STEP.match(line.strip())
            if m:
                state["steps"], state["total"] = int(m.group(1)), int(m.group(2))
                state["label"] = _short(m.group(3))
                state["last"] = time.monotonic()
                progress(f"[{state['steps']}/{state['total']}] "
                         f"{fmt_elapsed(state['last'] - start)} {state['label']}")
        code = proc.wait()
    done.set()
    seconds = time.monotonic() - start
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BuildFailed(f"setup.py failed (exit {code}) after {fmt_elapsed(seconds)}; "
                          f"full log: {log}\n{tail}", log)
    return {"seconds": round(seconds, 1), "steps": state["steps"], "total": state["total"]}
