"""The wheel's dependency bounds: what a fresh install may resolve.

Patch: "requirements: bound the dependencies that moved past vLLM 0.9.2"
(Tier: critical).

setup.py turns requirements/cuda.txt (which includes common.txt) into the
wheel's Requires-Dist. vLLM 0.9.2 gives transformers and most other
dependencies a lower bound only, so a host installing today resolved
transformers 5.24.0, with which `from vllm import LLM` fails. These tests
read the tree's requirement files the way setup.py does.
"""
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version


def read_requirements(tree: Path, name: str) -> dict[str, Requirement]:
    """setup.py's reading: `-r` includes, comments and option lines dropped."""
    out: dict[str, Requirement] = {}
    for line in (tree / "requirements" / name).read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "--")):
            continue
        if line.startswith("-r "):
            out.update(read_requirements(tree, line.split()[1]))
            continue
        req = Requirement(line)
        out[req.name.lower().replace("_", "-")] = req
    return out


@pytest.fixture(scope="module")
def cuda_requirements(vllm_tree) -> dict[str, Requirement]:
    return read_requirements(vllm_tree, "cuda.txt")


# Releases a fresh resolution picked (2026-12) or that are known to break 0.9.2.
BREAKING = [
    ("transformers", "4.54.0"),   # registers 'aimv2': vllm's Ovis config collides
    ("transformers", "5.24.0"),   # what an unbounded install resolved
    ("huggingface-hub", "1.0.0"),
    ("huggingface-hub", "2.4.0"),
    ("tokenizers", "0.22.0"),
    ("tokenizers", "0.23.3"),
    ("pydantic", "2.12.0"),
    ("pydantic", "2.14.4"),
    ("fastapi", "0.117.0"),
    ("fastapi", "0.165.0"),
    ("mistral-common", "1.8.0"),
    ("mistral-common", "1.13.1"),
    ("protobuf", "7.0.0"),
    ("opencv-python-headless", "5.0.0.93"),
]

# The versions the engine and server runs use (tests/engine, docs/engine-runs):
# the bounds must keep admitting them.
RUN_WITH = [
    ("transformers", "4.53.2"),
    ("transformers", "4.52.4"),   # what vLLM 0.9.2's own requirements/test.txt pins
    ("tokenizers", "0.21.2"),
    ("huggingface-hub", "0.33.4"),
    ("pydantic", "2.11.7"),
    ("fastapi", "0.115.14"),
    ("mistral-common", "1.6.3"),
    ("protobuf", "6.31.1"),
    ("opencv-python-headless", "4.12.0.88"),
]


@pytest.mark.parametrize("name,version", BREAKING)
def test_known_breaking_releases_are_excluded(cuda_requirements, name, version):
    req = cuda_requirements[name]
    assert not req.specifier.contains(Version(version), prereleases=True), (
        f"requirements admit {name} {version} ({req}): a fresh install can resolve it")


@pytest.mark.parametrize("name,version", RUN_WITH)
def test_tested_releases_are_admitted(cuda_requirements, name, version):
    req = cuda_requirements[name]
    assert req.specifier.contains(Version(version)), f"{req} refuses the tested {name} {version}"


def test_torch_stack_pins_unchanged(cuda_requirements):
    """The torch pins stay upstream's: the compiled kernels are built against torch 2.7.0."""
    assert str(cuda_requirements["torch"].specifier) == "==2.7.0"
    assert str(cuda_requirements["xformers"].specifier) == "==0.0.30"
