"""`python -m vllm_volta build <verb>`: wheel, toolchain, route, verify, provenance."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .. import report
from . import kernel_rule, provenance, provision, routes, runner, toolchain, verify, wheelfile


def _say(message: str) -> None:
    report.console.print(message, markup=False)


def _request(args) -> routes.Request:
    root = Path(args.root).resolve()
    return routes.Request(
        root=root, tree=Path(args.tree) if args.tree else root / "upstream",
        out=Path(args.out) if args.out else root / "dist", route=args.route,
        cuda_home=Path(args.cuda_home) if args.cuda_home else None, provision=not args.no_provision,
        cutlass_dir=Path(args.cutlass_dir) if args.cutlass_dir else None, jobs=args.jobs,
        project_version=args.project_version, log_dir=Path(args.log_dir) if args.log_dir else None,
        python=args.python, nice=args.nice)


def show_report(rep: verify.Report) -> None:
    report.show(f"verification: {rep.wheel}", ("extension", "size", "architectures", "RPATH/RUNPATH"),
                rep.rows())
    report.show("checks", ("check", "result", "detail"),
                ((name, "ok" if ok else "FAILED", "" if ok else detail) for name, ok, detail in rep.checks))


def cmd_wheel(args) -> int:
    req = _request(args)
    try:
        result = routes.build(req, progress=_say)
    except verify.VerificationError as exc:
        show_report(exc.report)
        report.fail(f"{exc}\nThe wheel was not put in {req.out}.")
        return 1
    except (routes.RouteRefused, toolchain.ToolchainError, provision.ProvisionError,
            runner.BuildFailed, RuntimeError) as exc:
        report.fail(str(exc))
        return 1
    show_report(result.report)
    size = result.wheel.stat().st_size
    _say(f"wheel: {result.wheel}\n"
         f"  version {result.version}, route {result.route}, {size:,} bytes "
         f"(upstream's 0.9.2 wheel: 383,350,132), sha256 {result.sha256}\n"
         f"  built in {runner.fmt_elapsed(result.seconds)} (setup.py {runner.fmt_elapsed(result.setup_seconds)}); "
         f"log {result.log}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "wheel": str(result.wheel), "version": result.version, "route": result.route,
            "bytes": size, "sha256": result.sha256, "seconds": result.seconds,
            "setup_seconds": result.setup_seconds, "log": str(result.log),
            "extensions": result.report.extension_summary(),
            "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in result.report.checks],
        }, indent=2) + "\n")
    return 0


def cmd_toolchain(args) -> int:
    cache = routes.cache_root()
    try:
        tk, notes = toolchain.find(args.cuda_home, provisioned=provision.toolkit_dir(cache))
        for note in notes:
            _say(f"passed over: {note}")
        if tk is None and args.provision:
            tk = toolchain.inspect(provision.provision(cache, _say), "provisioned")
    except (toolchain.ToolchainError, provision.ProvisionError) as exc:
        report.fail(str(exc))
        return 1
    if tk is None:
        report.fail("no CUDA 12.x toolkit found. " + toolchain.INSTALL_HINT)
        return 1
    _say(f"using {tk.describe()}")
    return 0


def cmd_route(args) -> int:
    req = _request(args)
    from ..series import upstream as series_upstream
    from . import stage
    pin = series_upstream.Pin.load(req.root)
    _, patch_paths = routes.series_facts(req.root, req.tree)
    sdist = series_upstream.fetch_sdist(pin, _say)
    findings = kernel_rule.judge(req.tree.resolve(), stage.tree_files(req.tree), sdist, patch_paths)
    if findings:
        report.show("kernel inputs that differ from vLLM 0.9.2", ("path", "change", "patches"),
                    ((f.path, f.detail, ", ".join(f.patches) or "(not from the series)") for f in findings))
        _say("upstream-kernels: refused; auto builds from source")
        return 0
    _say("upstream-kernels: allowed (no kernel input differs from vLLM 0.9.2); auto uses it")
    return 0


def cmd_verify(args) -> int:
    wheel = Path(args.wheel)
    import zipfile
    with zipfile.ZipFile(wheel) as zf:
        version = wheelfile.metadata(zf).get("Version", "")
    try:
        route = provenance.read_wheel(wheel).get("kernel_route", "")
    except KeyError:
        route = ""
    cuobjdump = Path(args.cuobjdump) if args.cuobjdump else routes._any_cuobjdump(
        routes.Request(root=Path("."), tree=Path("."), out=Path(".")), routes.cache_root(), _say)
    rep = verify.verify_wheel(wheel, version=version, route=route, cuobjdump=cuobjdump,
                              host_prefixes=[*args.host_prefix, str(routes.cache_root()), str(Path.home())])
    ok, detail = verify.check_sha256(wheel)
    rep.check(".sha256 beside the wheel", ok, detail)
    show_report(rep)
    return 0 if rep.ok else 1


def cmd_provenance(args) -> int:
    try:
        record = provenance.read_wheel(Path(args.wheel)) if args.wheel else provenance.read_installed()
    except (KeyError, LookupError, ModuleNotFoundError) as exc:
        report.fail(f"no provenance: {exc}")
        return 1
    except Exception as exc:  # PackageNotFoundError and friends
        report.fail(f"no provenance: {type(exc).__name__}: {exc}")
        return 1
    print(json.dumps(record, indent=2))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=os.environ.get("VLLM_VOLTA_ROOT", "."),
                   help="the vllm-volta checkout (pin.toml, series/); default: $VLLM_VOLTA_ROOT or .")
    p.add_argument("--tree", help="the vLLM source tree to build; default: <root>/upstream")
    p.add_argument("--out", help="where the verified wheel goes; default: <root>/dist")
    p.add_argument("--route", choices=routes.ROUTES, default="auto",
                   help="auto (default): upstream-kernels when no kernel input changed, else source")
    p.add_argument("--cuda-home", help="the CUDA 12.x toolkit to build with (default: CUDA_HOME, "
                                       "the usual locations, else one provisioned into the cache)")
    p.add_argument("--no-provision", action="store_true",
                   help="refuse instead of provisioning CUDA 12.4 when no CUDA 12 toolkit is found")
    p.add_argument("--cutlass-dir", help="a CUTLASS source checkout (default: PyPI nvidia-cutlass headers)")
    p.add_argument("--jobs", type=int, default=0, help="parallel compile jobs (default: CPUs available)")
    p.add_argument("--project-version", help="use this instead of the project's setuptools-scm version "
                                             "for the +volta label")
    p.add_argument("--log-dir", help="where the build log goes (default: the cache's logs/)")
    p.add_argument("--python", help="the Python (3.9-3.12) to build with (default: this one)")
    p.add_argument("--nice", type=int, default=0, help="run the compile under nice -n N")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_volta build",
                                     description="Build and verify the vllm 0.9.2+volta.N wheel.")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("wheel", help="build the wheel into dist/ (verified, with .sha256)")
    _common(p)
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.set_defaults(func=cmd_wheel)
    p = sub.add_parser("route", help="may upstream's compiled kernels be used for this tree? why not?")
    _common(p)
    p.set_defaults(func=cmd_route)
    p = sub.add_parser("toolchain", help="show (or provision) the CUDA 12 toolkit a source build uses")
    p.add_argument("--cuda-home")
    p.add_argument("--provision", action="store_true", help="provision CUDA 12.4 if none is found")
    p.set_defaults(func=cmd_toolchain)
    p = sub.add_parser("verify", help="verify a wheel (archs per extension, RPATH, host paths, RECORD)")
    p.add_argument("wheel")
    p.add_argument("--cuobjdump")
    p.add_argument("--host-prefix", action="append", default=[],
                   help="a build-host path that must not appear in any .so (repeatable)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("provenance", help="print the provenance of a wheel, or of the installed vllm")
    p.add_argument("wheel", nargs="?")
    p.set_defaults(func=cmd_provenance)
    args = parser.parse_args(argv)
    start = time.monotonic()
    code = args.func(args)
    if args.verb == "wheel":
        _say(f"build {'done' if code == 0 else 'failed'} after {runner.fmt_elapsed(time.monotonic() - start)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
