"""`python -m vllm_volta series <verb>`: apply, refresh, check, status."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import report
from . import check as check_mod
from . import model, stack, upstream


def _root(args) -> Path:
    return Path(args.root).resolve()


def cmd_apply(args) -> int:
    try:
        result = stack.apply(_root(args), tier=args.tier, force=args.force, progress=report.console.print)
    except stack.ApplyConflict as exc:
        _apply_table(exc.result)
        report.fail(str(exc))
        return 1
    except (stack.StackError, upstream.UpstreamError, model.SeriesError) as exc:
        report.fail(str(exc))
        return 1
    _apply_table(result)
    report.console.print(
        f"upstream source: {result.upstream.describe()}\n"
        f"branch {upstream.BRANCH} at {result.upstream.repo.head.target} "
        f"({sum(o.state == stack.APPLIED for o in result.outcomes)} applied, "
        f"{sum(o.state == stack.ALREADY for o in result.outcomes)} already applied) in {result.seconds:.2f}s"
        + (f"; old tip kept as {result.backup}" if result.backup else "")
    )
    return 0


def _apply_table(result: stack.ApplyResult) -> None:
    report.show(
        "apply",
        ("patch", "tier", "state", "commit", "detail"),
        ((o.name, o.tier, o.state, o.commit, o.detail) for o in result.outcomes),
    )


def cmd_refresh(args) -> int:
    try:
        result = stack.refresh(_root(args), progress=report.console.print)
    except (stack.StackError, upstream.UpstreamError) as exc:
        report.fail(str(exc))
        return 1
    report.show("refresh", ("file", "state"), result.files)
    report.console.print(f"{len(result.changed)} file(s) changed in {result.seconds:.2f}s")
    return 0


def cmd_check(args) -> int:
    problems = check_mod.check(_root(args))
    if problems:
        report.show("check: problems", ("where", "what"), ((p.where, p.what) for p in problems))
        report.fail(f"{len(problems)} problem(s); fix them, then run `nox -s check` again")
        return 1
    series = model.Series.load(_root(args))
    report.console.print(f"check: {len(series.entries)} patches, all consistent, canonical and within policy")
    return 0


def cmd_status(args) -> int:
    try:
        rows = stack.status(_root(args))
    except (stack.StackError, upstream.UpstreamError, model.SeriesError) as exc:
        report.fail(str(exc))
        return 1
    report.show("series status", ("patch", "tier", "on branch volta", "commit", "note"),
                ((o.name, o.tier, o.state, o.commit, o.detail) for o in rows))
    return 0


def cmd_prove(args) -> int:
    from . import prove

    try:
        proofs = prove.prove(_root(args))
    except stack.StackError as exc:
        report.fail(str(exc))
        return 1
    report.show("each patch's test: fails without it, passes with it",
                ("patch", "test", "pristine tree", "patched tree", "verdict"),
                ((p.name, p.test, p.pristine, p.patched, "ok" if p.ok else "NOT PROVEN") for p in proofs))
    bad = [p for p in proofs if not p.ok]
    if bad:
        report.fail(f"{len(bad)} patch(es) without a test that fails on the pristine tree and passes patched")
        return 1
    report.console.print(f"{len(proofs)} passed, 0 failed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm_volta series")
    parser.add_argument("--root", default=".", help="the vllm-volta checkout (default: .)")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("apply", help="apply the series onto upstream/ as commits on branch volta")
    p.add_argument("--tier", choices=model.TIERS, help="apply this tier and the ones before it only")
    p.add_argument("--force", action="store_true", help="drop branch commits that are not in the series (backed up)")
    p.set_defaults(func=cmd_apply)
    sub.add_parser("refresh", help="rewrite patches/ and series/ from branch volta").set_defaults(func=cmd_refresh)
    sub.add_parser("check", help="check the series: files, numbering, headers, form, policy").set_defaults(func=cmd_check)
    sub.add_parser("status", help="show which patches branch volta holds").set_defaults(func=cmd_status)
    sub.add_parser("prove", help="run each patch's test on the pristine and the patched tree").set_defaults(func=cmd_prove)
    args = parser.parse_args(argv)
    return args.func(args)
