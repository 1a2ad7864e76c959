"""`python -m vllm_volta series <verb>`: apply, refresh (and --onto), check, status, upstream-report."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import report
from . import check as check_mod
from . import model, patchfile, rebase, stack, upstream

# The faults a user can meet: each is reported as one line (cause, thing, next step).
EXPECTED = (stack.StackError, upstream.UpstreamError, model.SeriesError, patchfile.PatchFormatError,
            rebase.RebaseError)


def _root(args) -> Path:
    return Path(args.root).resolve()


def _refuse_mid_replay(args, verb: str) -> bool:
    try:
        state = rebase.in_progress(_root(args))
    except (upstream.UpstreamError, rebase.RebaseError):
        return False
    if state is None:
        return False
    report.fail(
        f"a replay onto {state['onto']['spec']} is in progress in upstream/ (branch {rebase.ONTO_BRANCH}); "
        f"{verb} waits until it is finished: `nox -s refresh -- --continue`, `--accept` or `--abort`"
    )
    return True


def cmd_apply(args) -> int:
    if _refuse_mid_replay(args, "apply"):
        return 1
    try:
        result = stack.apply(_root(args), tier=args.tier, force=args.force, progress=report.console.print)
    except stack.ApplyConflict as exc:
        _apply_table(exc.result)
        report.fail(str(exc))
        return 1
    except EXPECTED as exc:
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
    if args.dry_run and not args.onto:
        report.fail("--dry-run goes with --onto REF_OR_VERSION")
        return 2
    if args.onto or args.cont or args.accept or args.abort:
        return _cmd_onto(args)
    if _refuse_mid_replay(args, "refresh"):
        return 1
    try:
        result = stack.refresh(_root(args), force=args.force, progress=report.console.print)
    except EXPECTED as exc:
        report.fail(str(exc))
        return 1
    report.show("refresh", ("file", "state"), result.files)
    report.console.print(f"{len(result.changed)} file(s) changed in {result.seconds:.2f}s"
                         + (f"; the files replaced or removed are kept in {result.backup}" if result.backup else ""))
    return 0


def _show_rebase(rep: rebase.Report) -> None:
    report.show(f"{rep.title}: {rep.summary()}", rebase.COLUMNS, (r.cells() for r in rep.rows))
    report.console.print(f"from: {rep.old}\nonto: {rep.onto.describe()}")
    for note in rep.notes:
        report.console.print(f"note: {note}")


def _copy_report(args, text: str, default: Path | None) -> None:
    for path in filter(None, (default, Path(args.report).resolve() if args.report else None)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        report.console.print(f"report: {path}")


def _cmd_onto(args) -> int:
    root, say = _root(args), report.console.print
    try:
        if args.onto and args.dry_run:
            rep = rebase.dry_run(root, args.onto, progress=say)
            _show_rebase(rep)
            _copy_report(args, rep.markdown(), None)
            return 0
        if args.abort:
            rebase.abort(root, progress=say)
            return 0
        if args.accept:
            done = rebase.accept(root, progress=say)
            report.show("refresh", ("file", "state"), done.refreshed.files)
            say(
                f"the pin, series/ and patches/ as they were are kept in {done.refreshed.backup}. "
                f"pin.toml: vLLM {done.pin.version}, sdist base commit {done.base}; "
                f"{len(done.refreshed.changed)} file(s) under patches/ and series/ changed. "
                f"The replay report stays at {done.report}. Run `nox -s check` and the tests, then commit "
                "pin.toml, patches/ and series/ together"
                + ("" if done.pin.commit else "; the pin says the git commit is not known")
                + "."
            )
            return 0
        rep = rebase.cont(root, progress=say) if args.cont else rebase.start(root, args.onto, progress=say)
    except stack.ApplyConflict as exc:
        _apply_table(exc.result)
        report.fail(str(exc))
        return 1
    except EXPECTED as exc:
        report.fail(str(exc))
        return 1
    _show_rebase(rep)
    say(rep.mode)
    _copy_report(args, rep.markdown(), None)
    say(f"report: {rebase.report_path(upstream.open_upstream(root))}")
    return 1 if rep.stopped else 0


def cmd_upstream_report(args) -> int:
    root = _root(args)
    try:
        reps = rebase.upstream_report(root, count=args.count, versions=args.versions or None,
                                      progress=report.console.print)
    except EXPECTED as exc:
        report.fail(str(exc))
        return 1
    for rep in reps:
        _show_rebase(rep)
    default = rebase.state_dir(upstream.open_upstream(root)) / "upstream-report.md"
    _copy_report(args, rebase.upstream_markdown(reps), default)
    return 0


def cmd_check(args) -> int:
    try:
        problems = check_mod.check(_root(args))
    except EXPECTED as exc:
        report.fail(str(exc))
        return 1
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
    except EXPECTED as exc:
        report.fail(str(exc))
        return 1
    report.show("series status", ("patch", "tier", "on branch volta", "commit", "note"),
                ((o.name, o.tier, o.state, o.commit, o.detail) for o in rows))
    missing = [o.name for o in rows if o.state == stack.MISSING_FILE]
    if missing:
        report.fail(f"{len(missing)} patch(es) listed in series/series are not in patches/ ({', '.join(missing)}); "
                    "restore them (`git checkout -- patches/`) or remove their lines")
        return 1
    return 0


def cmd_prove(args) -> int:
    from . import prove

    try:
        proofs = prove.prove(_root(args))
    except EXPECTED as exc:
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
    p = sub.add_parser("refresh", help="rewrite patches/ and series/ from branch volta; --onto replays it")
    p.add_argument("--force", action="store_true",
                   help="replace or remove patch files nothing else holds (a copy is kept and named)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--onto", metavar="REF_OR_VERSION",
                   help="replay the series onto a ref of upstream/ or a vLLM release (its PyPI sdist)")
    g.add_argument("--continue", dest="cont", action="store_true",
                   help="commit the resolution of the stopped patch and replay the rest")
    g.add_argument("--accept", action="store_true",
                   help="make the complete replay the series: move the pin, rewrite patches/ and series/")
    g.add_argument("--abort", action="store_true", help="drop the replay; upstream/ back on branch volta")
    p.add_argument("--dry-run", action="store_true", help="with --onto: classify only, change nothing")
    p.add_argument("--report", metavar="PATH", help="also write the Markdown report here")
    p.set_defaults(func=cmd_refresh)
    p = sub.add_parser("upstream-report", help="dry runs of the series on the newest vLLM releases")
    p.add_argument("-n", "--count", type=int, default=3, help="how many of the newest releases (default 3)")
    p.add_argument("--report", metavar="PATH", help="also write the Markdown report here")
    p.add_argument("versions", nargs="*", help="these releases instead of the newest")
    p.set_defaults(func=cmd_upstream_report)
    sub.add_parser("check", help="check the series: files, numbering, headers, form, policy").set_defaults(func=cmd_check)
    sub.add_parser("status", help="show which patches branch volta holds").set_defaults(func=cmd_status)
    sub.add_parser("prove", help="run each patch's test on the pristine and the patched tree").set_defaults(func=cmd_prove)
    args = parser.parse_args(argv)
    return args.func(args)
