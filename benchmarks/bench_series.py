"""Time apply and refresh on the real tree next to `git am` / `git format-patch`.

Not a test: it prints figures. Each tool works on its own fresh copy of the
pristine upstream base, in the same run, over the same series:

    python benchmarks/bench_series.py [--repeat 3]

The engine side runs in-process (pygit2); the git side runs the git CLI
(this script only: the engine never shells out to git).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from vllm_volta import report
from vllm_volta.series import model, stack, upstream

ROOT = Path(__file__).resolve().parents[1]
quiet = lambda *_: None  # noqa: E731


def _copy_checkout(dst: Path) -> Path:
    root = dst / "proj"
    root.mkdir(parents=True)
    shutil.copy(ROOT / "pin.toml", root)
    shutil.copytree(ROOT / "series", root / "series")
    shutil.copytree(ROOT / "patches", root / "patches")
    shutil.copytree(ROOT / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@invalid", *args],
        cwd=repo, check=True, capture_output=True,
    )


def one_round(tmp: Path) -> dict[str, float]:
    out = {}
    root = _copy_checkout(tmp / "engine")
    upstream.materialize(root, quiet)  # the base import is not part of either side
    series = model.Series.load(root)
    t = time.perf_counter()
    stack.apply(root, progress=quiet)
    out["engine apply"] = time.perf_counter() - t
    t = time.perf_counter()
    stack.refresh(root, progress=quiet)
    out["engine refresh"] = time.perf_counter() - t

    # git: the same pristine base (cloned from the engine's base commit)
    gitdir = tmp / "git"
    _git(tmp, "clone", "-q", "--no-checkout", str(root / "upstream"), str(gitdir))
    base = str(upstream.open_upstream(root).base.id)
    _git(gitdir, "checkout", "-q", "-b", "bench", base)
    patches = [str(series.path_of(e)) for e in series.entries]
    t = time.perf_counter()
    _git(gitdir, "am", "-q", "--committer-date-is-author-date", *patches)
    out["git am"] = time.perf_counter() - t
    outdir = tmp / "fp"
    t = time.perf_counter()
    _git(gitdir, "format-patch", "-q", "--zero-commit", "--no-signature", "-o", str(outdir),
         f"{base}..HEAD")
    out["git format-patch"] = time.perf_counter() - t
    out["patches"] = len(patches)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rounds = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(one_round(Path(tmp)))
    n = int(rounds[0].pop("patches"))
    for r in rounds[1:]:
        r.pop("patches")
    rows = [
        (k, f"{statistics.median(r[k] for r in rounds):.3f}", f"{min(r[k] for r in rounds):.3f}",
         f"{max(r[k] for r in rounds):.3f}")
        for k in rounds[0]
    ]
    report.show(f"series of {n} patches on vLLM 0.9.2, {args.repeat} rounds (seconds)",
                ("step", "median", "min", "max"), rows)


if __name__ == "__main__":
    main()
