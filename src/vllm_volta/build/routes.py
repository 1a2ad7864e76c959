"""The three routes from a vLLM tree to a verified wheel in dist/.

- ``source``: compile ``_C``, ``_moe_C`` and ``cumem_allocator`` for SM 7.0
  with a CUDA 12 toolkit (found, or provisioned into the cache).
- ``upstream-kernels``: take those three compiled extensions from PyPI's
  vllm 0.9.2 wheel (sha256-verified) and package them with the patched Python
  tree; refused when the tree changes a kernel input (see kernel_rule).
- ``empty``: ``VLLM_TARGET_DEVICE=empty``, no CUDA extension at all; for
  index and install tests, labelled ``+volta.N.empty``.
- ``auto`` (the default): upstream-kernels when the rule allows it, else
  source. Either ends with a real wheel on a machine with no CUDA.

Every route builds in the cache, verifies the wheel in a temporary folder,
and moves it (with its .sha256) into dist/ only when every check passed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

from ..series import model as series_model
from ..series import upstream as series_upstream
from . import (buildenv, buildflags, cutlass, kernel_rule, provenance, provision, runner, stage,
               toolchain, upstream_wheel, verify, version, wheelfile)

Progress = Callable[[str], None]
ROUTES = ("auto", "source", "upstream-kernels", "empty")


class RouteRefused(RuntimeError):
    """The asked-for route cannot build this tree; the message says why."""


@dataclasses.dataclass
class Request:
    root: Path
    tree: Path
    out: Path
    route: str = "auto"
    cuda_home: Path | None = None
    provision: bool = True
    cutlass_dir: Path | None = None
    jobs: int = 0
    project_version: str | None = None  # default: the project's setuptools-scm version
    log_dir: Path | None = None
    python: str | None = None
    nice: int = 0


@dataclasses.dataclass
class Result:
    wheel: Path
    sha256: str
    route: str
    version: str
    seconds: float
    setup_seconds: float
    report: verify.Report
    log: Path
    record: dict


def cache_root() -> Path:
    return series_upstream.cache_dir()


# -- series and upstream facts ------------------------------------------------

def series_facts(root: Path, tree: Path) -> tuple[dict, dict[str, set[str]]]:
    """(the provenance's series part, each patch's touched paths)."""
    from ..series import policy
    try:
        series = series_model.Series.load(root)
    except series_model.SeriesError:
        return {"hash": None, "patches": [], "applied": None}, {}
    patches, paths = [], {}
    for entry in series.entries:
        patches.append({"name": entry.name, "tier": entry.tier})
        try:
            diff = series.read(entry).diff
            paths[entry.name] = {p for c in policy.file_changes(diff) for p in (c.old_path, c.new_path)}
        except Exception:
            paths[entry.name] = set()
    applied = None
    is_upstream = tree.resolve() == (root / series_upstream.UPSTREAM_DIR).resolve()
    if is_upstream:
        try:
            from ..series import stack
            applied = [o.name for o in stack.status(root) if o.state == stack.ALREADY]
            paths = {k: v for k, v in paths.items() if k in applied}
        except Exception:
            applied = None
    tree_note = ("the project's upstream/ (branch volta)" if is_upstream else
                 "another tree (--tree): which series patches it holds is not known")
    return {"hash": series.digest(), "patches": patches, "applied": applied, "tree": tree_note}, paths


def upstream_facts(pin: series_upstream.Pin) -> dict:
    return {"version": pin.version, "tag": pin.tag, "commit": pin.commit,
            "sdist": {"filename": pin.sdist.filename, "sha256": pin.sdist.sha256}}


# -- route choice -------------------------------------------------------------

def choose(req: Request, pin: series_upstream.Pin, files: list[str], patch_paths: dict[str, set[str]],
           progress: Progress) -> tuple[str, list[kernel_rule.Finding]]:
    if req.route == "empty":
        return "empty", []
    if req.route == "source":
        return "source", []
    sdist = series_upstream.fetch_sdist(pin, progress)
    findings = kernel_rule.judge(req.tree, files, sdist, patch_paths)
    if req.route == "upstream-kernels":
        if findings:
            raise RouteRefused(
                "the upstream-kernels route cannot build this tree: PyPI's compiled kernels were "
                "built from the pristine 0.9.2 sources, and the tree changes what they are built from:\n  - "
                + "\n  - ".join(f.describe() for f in findings)
                + "\nBuild from source instead (--route source, or --route auto).")
        return "upstream-kernels", []
    if findings:
        progress("route: source (the tree changes kernel inputs, so upstream's compiled kernels "
                 "do not fit: " + "; ".join(f.describe() for f in findings) + ")")
        return "source", findings
    progress("route: upstream-kernels (no kernel input differs from vLLM 0.9.2; "
             "the compiled extensions come from PyPI's verified vllm 0.9.2 wheel)")
    return "upstream-kernels", []


# -- the build ------------------------------------------------------------------

def build(req: Request, progress: Progress = print) -> Result:
    start = time.monotonic()
    req.tree, req.root, req.out = req.tree.resolve(), req.root.resolve(), req.out.resolve()
    if not (req.tree / "setup.py").exists() or not (req.tree / "vllm").is_dir():
        raise RouteRefused(f"{req.tree} is not a vLLM source tree (no setup.py and vllm/); "
                           "run `nox -s apply` first or pass --tree")
    cache = cache_root()
    pin = series_upstream.Pin.load(req.root)
    series, patch_paths = series_facts(req.root, req.tree)
    files = stage.tree_files(req.tree)
    route, findings = choose(req, pin, files, patch_paths, progress)
    if route != "empty" and "VLLM_VERSION_OVERRIDE" not in (req.tree / "setup.py").read_text():
        raise RouteRefused(
            f"{req.tree}/setup.py does not honour VLLM_VERSION_OVERRIDE, so the wheel would be "
            "labelled +cuXYZ or +precompiled instead of +volta.N: the series' setup.py version patch "
            "is missing from this tree. Run `nox -s apply`, or build it with --route empty.")
    project = req.project_version or version.project_version(req.root)
    wanted = version.wheel_version(pin.version, project, empty=route == "empty")
    series["project_version"] = project
    progress(f"building vllm {wanted} by the {route} route from {req.tree}")
    if not version.is_release(wanted.removesuffix(".empty")):
        progress(f"note: {wanted} is a development label, not a release: {req.root} is not at a "
                 "series tag vN (or has changes since). To cut release N, commit, `git tag vN`, "
                 "and build again (README: Cutting a release).")

    builder = {"source": _source, "upstream-kernels": _upstream_kernels, "empty": _empty}[route]
    log_dir = req.log_dir or cache / "logs"
    log = log_dir / f"build-{route}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    req.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".volta-build-", dir=req.out))
    try:
        ctx = builder(req, cache, files, wanted, tmp, log, progress)
        built = sorted(tmp.glob("*.whl"))
        if len(built) != 1:
            raise runner.BuildFailed(f"setup.py left {len(built)} wheels in {tmp}, expected one", log)
        wheel = built[0]
        # The upstream-kernels route adds the extensions it takes from PyPI's wheel here:
        # setup.py's VLLM_USE_PRECOMPILED copies them into the tree during build_ext, after
        # build_py has collected the package files, so a one-shot bdist_wheel leaves them out.
        added = ctx["add_files"]() if ctx.get("add_files") else {}
        prefixes = [str(p) for p in (ctx["stage"], cache, Path.home(), req.tree, req.root, tmp,
                                     *ctx.get("more_prefixes", ()))]
        prefixes = sorted({p.rstrip("/") + "/" for p in prefixes})
        progress("inspecting the extensions (cuobjdump, ELF dynamic section, host paths)")
        exts = verify.inspect_extensions(wheel, ctx.get("cuobjdump"), prefixes, extra=added)
        summary = verify.summarize(exts)
        kernels = dict(ctx["kernels"], extensions=summary)
        if route == "upstream-kernels":
            kernels["arch_list"] = sorted({a for e in exts for a in e.cubins}, key=verify._arch_key)
        record = provenance.build_record(
            version=wanted, route=route, upstream=upstream_facts(pin), series=series,
            kernels=kernels, toolchain=ctx["toolchain"], tool_version=project)
        with zipfile.ZipFile(wheel) as zf:
            info_dir = wheelfile.dist_info(zf)
        wheelfile.add_files(wheel, provenance.wheel_files(info_dir, record),
                            raw_from={name: ctx["raw_source"] for name in added})
        progress("verifying the wheel")
        report = verify.verify_wheel(wheel, version=wanted, route=route, cuobjdump=ctx.get("cuobjdump"),
                                     host_prefixes=prefixes, extensions=exts)
        if not report.ok:
            raise verify.VerificationError(report)
        final = req.out / wheel.name
        for old in (final, final.with_name(final.name + ".sha256")):
            if old.exists():
                old.unlink()
        shutil.move(wheel, final)
        side = verify.write_sha256(final)
        ok, detail = verify.check_sha256(final)
        report.check(".sha256 beside the wheel", ok, detail)
        if not ok:
            final.unlink()
            side.unlink()
            raise verify.VerificationError(report)
        digest = side.read_text().split()[0]
        return Result(final, digest, route, wanted, round(time.monotonic() - start, 1),
                      ctx.get("setup_seconds", 0.0), report, log, record)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _jobs(req: Request) -> int:
    if req.jobs:
        return req.jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _stage_dir(cache: Path, route: str, env: buildenv.BuildEnv, suffix: str = "") -> Path:
    """One staging folder per route, build environment (Python + requirements) and toolkit
    release, e.g. ``stage/source-py3.11-8d87c255a256-cuda12.4-sm70``."""
    env_key = env.root.name.split("-", 2)[2]  # build-<kind>-<py>-<hash> -> <py>-<hash>
    return cache / "stage" / f"{route}-{env_key}{suffix}"


def _setup_py(req: Request, env_python: Path, src: Path, dist: Path, env: dict, log: Path,
              progress: Progress, *, abi3: bool) -> float:
    cmd = [str(env_python), "setup.py", "bdist_wheel", "--dist-dir", str(dist)]
    if abi3:
        cmd += ["--py-limited-api", "cp38"]
    if req.nice:
        cmd = ["nice", "-n", str(req.nice), *cmd]
    env = dict(env, PYTHONUNBUFFERED="1")
    # vLLM's setup.py writes vllm/_version.py and build/ into the staging copy only.
    result = runner.run(cmd, cwd=src, env=env, log=log, progress=progress)
    progress(f"setup.py finished in {runner.fmt_elapsed(result['seconds'])} "
             f"({result['steps']} compile steps run)")
    return result["seconds"]


def _toolchain_facts(env: buildenv.BuildEnv) -> dict:
    versions = env.versions()
    return {"torch": versions.get("torch"), "triton": versions.get("triton"),
            "setuptools": versions.get("setuptools"), "cmake": versions.get("cmake"),
            "ninja": versions.get("ninja")}


def find_toolkit(req: Request, cache: Path, progress: Progress) -> toolchain.Toolkit:
    tk, notes = toolchain.find(req.cuda_home, provisioned=provision.toolkit_dir(cache))
    for note in notes:
        progress(f"toolchain: {note}")
    if tk is None:
        if not req.provision:
            raise toolchain.ToolchainError("no CUDA 12.x toolkit found (--no-provision given). "
                                           + toolchain.INSTALL_HINT)
        progress("toolchain: no CUDA 12.x toolkit on this machine; provisioning one into the cache")
        tk = toolchain.check_usable(toolchain.inspect(provision.provision(cache, progress), "provisioned"))
    progress(f"toolchain: {tk.describe()}")
    return tk


def _source(req, cache, files, wanted, dist, log, progress) -> dict:
    tk = find_toolkit(req, cache, progress)
    if req.cutlass_dir:
        cut_dir, cut_info = req.cutlass_dir.resolve(), {"source": "--cutlass-dir (local checkout)"}
    else:
        cut_dir, cut_info = cutlass.prepare(cache, progress)
    env = buildenv.ensure(cache, req.tree, python=req.python, progress=progress)
    st = _stage_dir(cache, "source", env, f"-cuda{tk.short}-sm{buildflags.ARCH_LIST.replace('.', '')}")
    src = st / "src"
    synced = stage.sync(req.tree, src)
    progress(f"staging {src}: {synced.copied} files copied, {synced.unchanged} unchanged, "
             f"{synced.removed} removed")
    build_env = buildflags.source_env(
        base=dict(os.environ), toolkit=tk.root, python_bin=env.root / "bin", stage=src, cache=cache,
        cutlass_dir=cut_dir, version=wanted, jobs=_jobs(req),
        extra_maps={tk.root: "cuda", req.tree: "vllm", cut_dir: "cutlass"})
    seconds = _setup_py(req, env.python, src, dist, build_env, log, progress, abi3=True)
    return {
        "stage": src, "cuobjdump": tk.cuobjdump, "setup_seconds": seconds,
        "more_prefixes": [env.root, tk.root, cut_dir],
        "kernels": {"built_from": "source", "cuda": str(tk.version),
                    "toolkit": _toolkit_origin(tk, cache), "arch_list": buildflags.ARCH_LIST,
                    "build_type": "Release", "cutlass": cut_info},
        "toolchain": _toolchain_facts(env),
    }


def _toolkit_origin(tk: toolchain.Toolkit, cache: Path) -> str:
    if tk.origin == "provisioned":
        return f"provisioned: {provision.read_manifest(cache).get('source', 'Debian packages')}"
    return f"{tk.origin} ({'system toolkit'})"


def _upstream_kernels(req, cache, files, wanted, dist, log, progress) -> dict:
    wheel = upstream_wheel.fetch(cache, progress)
    env = buildenv.ensure(cache, req.tree, for_empty=True, standin_cuda=buildenv.TORCH_CUDA["cuda"],
                          python=req.python, progress=progress)
    st = _stage_dir(cache, "upstream-kernels", env)
    src = st / "src"
    synced = stage.sync(req.tree, src)
    progress(f"staging {src}: {synced.copied} files copied, {synced.unchanged} unchanged, "
             f"{synced.removed} removed")
    kernels = upstream_wheel.kernels_only(wheel, st / "precompiled" / "vllm-0.9.2-kernels.whl")
    cuobjdump = _any_cuobjdump(req, cache, progress)
    build_env = dict(os.environ)
    for var in ("CUDA_HOME", "CUDA_PATH", "TORCH_CUDA_ARCH_LIST"):
        build_env.pop(var, None)
    build_env.update({
        "PATH": os.pathsep.join([str(env.root / "bin"), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(env.standin_torch),
        "VLLM_TARGET_DEVICE": "cuda",
        "VLLM_USE_PRECOMPILED": "1",
        "VLLM_PRECOMPILED_WHEEL_LOCATION": str(kernels),
        "VLLM_VERSION_OVERRIDE": wanted,
        "SETUPTOOLS_SCM_PRETEND_VERSION": wanted,
    })
    seconds = _setup_py(req, env.python, src, dist, build_env, log, progress, abi3=True)
    return {
        "stage": src, "cuobjdump": cuobjdump, "setup_seconds": seconds, "more_prefixes": [env.root],
        "add_files": lambda: upstream_wheel.extension_files(wheel), "raw_source": wheel,
        "kernels": {"built_from": "PyPI vllm 0.9.2 wheel", "wheel": upstream_wheel.FILENAME,
                    "sha256": upstream_wheel.SHA256, "cuda": upstream_wheel.BUILT_WITH_CUDA,
                    "taken": list(upstream_wheel.TAKEN)},
        "toolchain": {"torch": upstream_wheel.TORCH, "triton": upstream_wheel.TRITON,
                      "note": "upstream compiled the kernels against these; this build compiled nothing",
                      "setuptools": env.versions().get("setuptools")},
    }


def _any_cuobjdump(req: Request, cache: Path, progress: Progress) -> Path:
    """cuobjdump from a CUDA 12 toolkit if there is one, else only cuobjdump, provisioned."""
    try:
        tk, _ = toolchain.find(req.cuda_home, provisioned=provision.toolkit_dir(cache))
    except toolchain.ToolchainError:
        tk = None
    if tk is not None and tk.cuobjdump:
        return tk.cuobjdump
    return provision.cuobjdump_only(cache, progress)


def _empty(req, cache, files, wanted, dist, log, progress) -> dict:
    env = buildenv.ensure(cache, req.tree, for_empty=True, standin_cuda=buildenv.TORCH_CUDA["empty"],
                          python=req.python, progress=progress)
    st = _stage_dir(cache, "empty", env)
    src = st / "src"
    synced = stage.sync(req.tree, src)
    progress(f"staging {src}: {synced.copied} files copied, {synced.unchanged} unchanged")
    build_env = dict(os.environ)
    build_env.update({
        "PATH": os.pathsep.join([str(env.root / "bin"), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(env.standin_torch),
        "VLLM_TARGET_DEVICE": "empty",
        "VLLM_VERSION_OVERRIDE": wanted,
        # Without the setup.py patch, upstream appends ".empty" itself.
        "SETUPTOOLS_SCM_PRETEND_VERSION": wanted.removesuffix(".empty"),
    })
    seconds = _setup_py(req, env.python, src, dist, build_env, log, progress, abi3=False)
    versions = env.versions()
    return {
        "stage": src, "cuobjdump": None, "setup_seconds": seconds, "more_prefixes": [env.root],
        "kernels": {"built_from": "none: VLLM_TARGET_DEVICE=empty, no CUDA extension (not for GPUs)",
                    "cuda": None, "arch_list": None},
        "toolchain": {"torch": None, "triton": None, "setuptools": versions.get("setuptools")},
    }
