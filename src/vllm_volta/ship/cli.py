"""``python -m vllm_volta ship <verb>``: publish, meta, doctor, validate, judge.

The top-level CLI hands the words after ``ship`` to ``main(argv)``; the
return value is the process exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from datetime import datetime
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vllm_volta ship", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    publish = verbs.add_parser("publish", help="upload dist/ wheels + the vllm-volta meta wheel")
    publish.add_argument("--dist", type=Path, default=Path("dist"), help="folder of built wheels")
    publish.add_argument("--dry-run", action="store_true", help="show what would be uploaded; upload nothing")
    publish.add_argument("--allow-empty-build", action="store_true",
                         help="permit a VLLM_TARGET_DEVICE=empty wheel (test indexes only)")
    publish.add_argument("--allow-dev-build", action="store_true",
                         help="permit an untagged +volta.N.devM... wheel (test indexes only)")

    lock = verbs.add_parser("lock", help="write the dependency lock beside each vllm wheel in dist/")
    lock.add_argument("--dist", type=Path, default=Path("dist"), help="folder of built wheels")

    meta = verbs.add_parser("meta", help="build the vllm-volta meta wheel beside the vllm wheel")
    meta.add_argument("--dist", type=Path, default=Path("dist"))

    doctor = verbs.add_parser("doctor", help="judge this host's environment for V100 serving")
    doctor.add_argument("--facts", type=Path, help="judge facts from this JSON file instead of probing")
    doctor.add_argument("--json", action="store_true", help="print facts and checks as JSON")
    doctor.add_argument("--allow-non-volta", action="store_true")

    validate = verbs.add_parser("validate", help="run the V100 validation plan, write a JSON report")
    validate.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    validate.add_argument("--report", type=Path, help="report path (default: "
                          "~/.cache/vllm-volta/validate/volta-validate-<host>-<time>.json, or under VLLM_VOLTA_CACHE)")
    validate.add_argument("--gpus", type=int, help="GPU count for --dry-run (default: ask nvidia-smi)")
    validate.add_argument("--single-model", default=None, help="model or local path for the 1-GPU run")
    validate.add_argument("--tp-model", default=None, help="model or local path for the TP runs")
    validate.add_argument("--tp-sizes", default="2,4", help="comma list; '' for none (default 2,4)")
    validate.add_argument("--require-tp", action="store_true", help="fail, not skip, TP runs lacking GPUs")
    validate.add_argument("--no-strategy-env", action="store_true",
                          help="do not set NCCL_CUMEM_ENABLE=0 NCCL_PROTO=simple VLLM_ATTENTION_BACKEND=TORCH_SDPA")
    validate.add_argument("--allow-non-volta", action="store_true")
    validate.add_argument("--startup-timeout", type=float, default=900.0, help="seconds (TP runs: twice this)")
    validate.add_argument("--facts", type=Path, help="use these doctor facts (testing)")

    judge = verbs.add_parser("judge", help="run the garbage detector on a report or recorded responses")
    judge.add_argument("files", type=Path, nargs="+")
    return parser


def _publish(args: argparse.Namespace) -> int:
    from rich.console import Console

    from vllm_volta.ship import publish
    from vllm_volta.ship.artifacts import ArtifactError
    from vllm_volta.ship.index import IndexProblem, load_config

    console = Console()
    if not console.is_terminal:  # logs and CI: do not fold the table at 80 columns
        console = Console(width=160)
    try:
        plan = publish.prepare(args.dist, allow_empty_build=args.allow_empty_build,
                               allow_dev_build=args.allow_dev_build)
        try:
            config = load_config(need_token=not args.dry_run)
        except IndexProblem as exc:
            if not args.dry_run:
                raise
            config = None
            plan.index_note = str(exc)
        if config is not None:
            publish.check_index(plan, config)
        title = "vllm-volta publish: DRY RUN, nothing uploaded" if args.dry_run else "vllm-volta publish"
        publish.render_plan(plan, console, title=title)
        if args.dry_run:
            if plan.conflicts:
                console.print("[red]a real publish would be refused: these versions are on the index "
                              "with other files[/]")
                return 1
            return 0
        notes = publish.upload_plan(plan, config, console)
    except (ArtifactError, IndexProblem, publish.PublishRefused) as exc:
        console.print(f"[bold red]publish: {exc}[/]")
        return 1
    for note in notes:
        console.print(f"[yellow]note: {note}[/]")
    done = len(plan.uploads) - len(plan.pending)
    console.print(f"[green]published {len(plan.uploads)} files"
                  + (f" ({done} already on the index, identical)" if done else "") + "; install with "
                  f"`pip install vllm-volta=={plan.uploads[-1].artifact.version}` (docs/install.md)[/]")
    return 0


def _meta(args: argparse.Namespace) -> int:
    from vllm_volta.ship.artifacts import ArtifactError, find_vllm_wheels
    from vllm_volta.ship.meta import build_meta_wheel, spec_for

    try:
        wheels, series = find_vllm_wheels(args.dist)
    except ArtifactError as exc:
        print(f"meta: {exc}", file=sys.stderr)
        return 1
    path = build_meta_wheel(spec_for(wheels, series), args.dist)
    print(f"{path} (requires vllm=={series.version})")
    return 0


def _lock(args: argparse.Namespace) -> int:
    from vllm_volta.ship.artifacts import ArtifactError, find_vllm_wheels
    from vllm_volta.ship.lock import LockError, make_lock

    try:
        wheels, _series = find_vllm_wheels(args.dist)
        for wheel in wheels:
            make_lock(wheel.path)
    except (ArtifactError, LockError) as exc:
        print(f"lock: {exc}", file=sys.stderr)
        return 1
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from vllm_volta.ship.validate import doctor

    facts = json.loads(args.facts.read_text()) if args.facts else doctor.gather_facts()
    checks = doctor.diagnose(facts, allow_non_volta=args.allow_non_volta)
    if args.json:
        print(json.dumps({"facts": facts, "checks": doctor.checks_json(checks)}, indent=2))
    else:
        for check in checks:
            print(f"{check.status:4}  {check.id}: {check.detail}")
            if check.hint and check.status in ("fail", "warn"):
                print(f"      -> {check.hint}")
    return 1 if doctor.failed(checks) else 0


def _options(args: argparse.Namespace):
    from vllm_volta.ship.validate.plan import Options

    options = Options(
        tp_sizes=tuple(int(x) for x in args.tp_sizes.split(",") if x.strip()),
        require_tp=args.require_tp,
        strategy_env=not args.no_strategy_env,
        allow_non_volta=args.allow_non_volta,
        startup_timeout_s=args.startup_timeout,
        tp_startup_timeout_s=2 * args.startup_timeout,
    )
    if args.single_model:
        options.single_model = args.single_model
    if args.tp_model:
        options.tp_model = args.tp_model
    return options


def default_report(host: str, stamp: str) -> Path:
    """Where a validation report goes unless --report says: the tool's cache, not the current folder."""
    cache = Path(os.environ.get("VLLM_VOLTA_CACHE", Path.home() / ".cache" / "vllm-volta"))
    folder = cache / "validate"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"volta-validate-{host}-{stamp}.json"


def _validate(args: argparse.Namespace) -> int:
    from vllm_volta.ship.validate import doctor
    from vllm_volta.ship.validate.plan import build_plan, describe_plan
    from vllm_volta.ship.validate.run import validate

    options = _options(args)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    report = args.report or default_report(socket.gethostname(), stamp)
    facts = json.loads(args.facts.read_text()) if args.facts else None
    if args.dry_run:
        if args.gpus is not None:
            gpus = args.gpus
        elif facts is not None:
            gpus = len(doctor.gpus_of(facts))
        else:
            found, _driver, error = doctor.nvidia_smi()
            gpus = None if error else len(found)
        print(describe_plan(build_plan(options, gpus), options, gpus, report))
        return 0
    return validate(options, report, facts=facts)


def _judge(args: argparse.Namespace) -> int:
    from vllm_volta.ship.validate.garbage import PromptCase, judge_record
    from vllm_volta.ship.validate.prompts import CASES

    by_id = {c.id: c for c in CASES}
    bad = 0
    for path in args.files:
        data = json.loads(path.read_text())
        records = data.get("responses") or [
            r for step in data.get("steps", []) for r in step.get("responses", [])
        ]
        for record in records:
            if "response" not in record:
                continue
            case = by_id.get(record["case"]) or PromptCase(record["case"], record.get("prompt", ""), ())
            verdict = judge_record(case, record)
            bad += not verdict.ok
            rules = ", ".join(f.rule for f in verdict.findings) or "coherent"
            print(f"{path.name}:{case.id}: {rules}: {verdict.text[:70]!r}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"publish": _publish, "lock": _lock, "meta": _meta, "doctor": _doctor,
                "validate": _validate, "judge": _judge}
    return handlers[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
