#!/usr/bin/env python3
"""Build time by route on this machine, and wheel size next to upstream's.

Not a test: it builds real wheels and prints the figures (a Markdown table,
and JSON with --json) that docs/build.md quotes. Each scenario builds a
private copy of the tree, so the tree itself is never touched:

  upstream-kernels   the route's full build (PyPI kernels + patched Python)
  source-cold        the source route with its staging folder removed first
                     (every object compiled: the ~40 minute case)
  source-warm        the source route again with nothing changed
  source-python      the source route after a Python-only change (a comment
                     added to vllm/version.py): objects are reused
  empty              VLLM_TARGET_DEVICE=empty

Usage: python scripts/bench_build.py [--scenarios a,b,...] [--tree upstream]
       [--jobs N] [--nice N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vllm_volta.build import routes, runner  # noqa: E402

UPSTREAM_WHEEL_BYTES = 383_350_132
SCENARIOS = ("upstream-kernels", "source-cold", "source-warm", "source-python", "empty")


def _source_stage(cache: Path) -> list[Path]:
    return sorted((cache / "stage").glob("source-*"))


def run(scenario: str, tree: Path, out: Path, args) -> dict:
    route = "source" if scenario.startswith("source") else scenario
    if scenario == "source-cold":
        for stage in _source_stage(routes.cache_root()):
            print(f"removing {stage} (cold build)", flush=True)
            shutil.rmtree(stage)
    if scenario == "source-python":
        version_py = tree / "vllm" / "version.py"
        version_py.write_text(version_py.read_text() + f"\n# bench {time.time()}\n")
    req = routes.Request(root=ROOT, tree=tree, out=out, route=route, jobs=args.jobs, nice=args.nice,
                         log_dir=Path(args.log_dir) if args.log_dir else None,
                         project_version=args.project_version)
    start = time.monotonic()
    result = routes.build(req, progress=lambda m: print(f"  {m}", flush=True))
    return {"scenario": scenario, "route": result.route, "seconds": round(time.monotonic() - start, 1),
            "setup_seconds": result.setup_seconds, "bytes": result.wheel.stat().st_size,
            "wheel": result.wheel.name, "log": str(result.log),
            "extensions": result.report.extension_summary()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default="upstream-kernels,source-warm,source-python,empty",
                   help=f"comma-separated, from {', '.join(SCENARIOS)}")
    p.add_argument("--tree", default=str(ROOT / "upstream"))
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--log-dir")
    p.add_argument("--project-version", default=None)
    p.add_argument("--json")
    args = p.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario(s) {unknown}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="volta-bench-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(args.tree, tree, symlinks=True,
                        ignore=shutil.ignore_patterns("build", "dist", ".deps", "__pycache__", "*.so"))
        for scenario in scenarios:
            print(f"== {scenario}", flush=True)
            rows.append(run(scenario, tree, Path(tmp) / "dist" / scenario, args))
    print("\n| scenario | route | wall time | setup.py | wheel bytes | vs upstream 383,350,132 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['route']} | {runner.fmt_elapsed(r['seconds'])} | "
              f"{runner.fmt_elapsed(r['setup_seconds'])} | {r['bytes']:,} | "
              f"{r['bytes'] / UPSTREAM_WHEEL_BYTES:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
