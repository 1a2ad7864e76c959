"""Small synthetic vllm-volta checkouts with a git upstream, built in tests."""

from __future__ import annotations

from pathlib import Path

import pygit2

from vllm_volta.series import upstream as up_mod

FIELDS = (
    "Volta-Why: a V100 needs it.\n"
    "Origin: ours\n"
    "Upstream-Status: inappropriate (Volta-only)\n"
    "Drop-When: never\n"
    "Tier: {tier}\n"
    "Test: tests/conftest.py::nothing\n"
)

PIN = """[upstream]
version = "0.0.1"
tag = "v0.0.1"
url = "https://example.invalid/up.git"
commit = "{commit}"

[upstream.sdist]
filename = "up-0.0.1.tar.gz"
size = 1
sha256 = "00"
exclude = ["PKG-INFO"]

[upstream.sdist.base]
author = "up sdist import"
email = "sdist@invalid"
date = "2025-01-01T00:00:00+00:00"
"""


def make_root(tmp: Path, files: dict[str, str]) -> Path:
    """A checkout whose upstream/ is a cloned 'submodule' holding ``files``."""
    root = tmp / "proj"
    (root / "series").mkdir(parents=True)
    (root / "patches").mkdir()
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text("")
    repo = pygit2.init_repository(str(root / "upstream"), initial_head="main")
    for rel, text in files.items():
        p = root / "upstream" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("Up Stream", "up@invalid", 1_700_000_000, 0)
    base = repo.create_commit("refs/heads/main", sig, sig, "upstream release\n", repo.index.write_tree(), [])
    repo.references.create(up_mod.BRANCH_REF, base)
    repo.set_head(up_mod.BRANCH_REF)
    (root / "pin.toml").write_text(PIN.format(commit=base))
    (root / "series" / "series").write_text("")
    return root


def commit_change(
    root: Path,
    subject: str,
    edits: dict[str, str | None],
    *,
    tier: str = "critical",
    body: str = "What it does.",
    when: int = 1_750_000_000,
) -> pygit2.Oid:
    """Edit files in upstream/ (None deletes) and commit on branch volta."""
    repo = pygit2.Repository(str(root / "upstream"))
    for rel, text in edits.items():
        p = root / "upstream" / rel
        if text is None:
            p.unlink(missing_ok=True)
            if rel in repo.index:
                repo.index.remove(rel)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            repo.index.add(rel)
    repo.index.write()
    sig = pygit2.Signature("Dev Eloper", "dev@invalid", when, 120)
    msg = f"{subject}\n\n{body}\n\n{FIELDS.format(tier=tier)}"
    return repo.create_commit(up_mod.BRANCH_REF, sig, sig, msg, repo.index.write_tree(), [repo.head.target])


def reset_upstream(root: Path) -> None:
    """Put branch volta back on the base with a clean tree (a pristine upstream)."""
    repo = pygit2.Repository(str(root / "upstream"))
    base = repo.revparse_single("refs/heads/main")
    repo.references.create(up_mod.BRANCH_REF, base.id, force=True)
    repo.set_head(up_mod.BRANCH_REF)
    repo.checkout(up_mod.BRANCH_REF, strategy=pygit2.enums.CheckoutStrategy.FORCE)


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for sub in ("patches", "series"):
        for p in sorted((root / sub).iterdir()):
            out[f"{sub}/{p.name}"] = p.read_bytes()
    return out


def lines(n: int, tag: str = "line") -> str:
    return "".join(f"{tag} {i}\n" for i in range(n))
