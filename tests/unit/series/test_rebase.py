"""refresh --onto: each classification, stop/continue/abort/accept, dry runs, on small synthetic trees."""

import hashlib
import io
import shutil
import tarfile

import pygit2
import pytest
from pypi_simple import ProjectPage

from vllm_volta.series import check, cli, rebase, releases, stack, upstream

from .synth import commit_change, lines, make_root, snapshot

quiet = lambda *_: None  # noqa: E731

A = lines(30)
BASE_FILES = {"a.py": A, "b.py": lines(10, "b"), "c.py": lines(10, "c"), "gone.py": lines(5, "g"), "keep.txt": "k\n"}

# Upstream's next release: a.py changed at line 25 (near nothing) and line 15
# (where patch 4 edits too), b.py got patch 3's change, gone.py removed.
NEW_FILES = dict(
    BASE_FILES,
    **{
        "a.py": A.replace("line 25\n", "upstream 25\n").replace("line 15\n", "upstream 15\n"),
        "b.py": lines(10, "b").replace("b 2\n", "B 2\n"),
        "new.py": "added upstream\n",
    },
)
del NEW_FILES["gone.py"]

PATCHES = [
    ("clean: edit c", {"c.py": lines(10, "c").replace("c 3\n", "C 3\n")}),
    ("merged: edit a near the top", {"a.py": A.replace("line 5\n", "ours 5\n")}),
    ("obsolete: edit b as upstream did", {"b.py": lines(10, "b").replace("b 2\n", "B 2\n")}),
    ("conflict: edit a line 15", {"a.py": A.replace("line 5\n", "ours 5\n").replace("line 15\n", "ours 15\n")}),
    ("missing: edit gone", {"gone.py": lines(5, "g").replace("g 1\n", "G 1\n")}),
]
CLASSES = [rebase.CLEAN, rebase.MERGED, rebase.OBSOLETE, rebase.CONFLICT, rebase.MISSING]


def _commit_tree(repo, parent, files, message):
    index = pygit2.Index()
    for path, text in sorted(files.items()):
        index.add(pygit2.IndexEntry(path, repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB))
    tree = index.write_tree(repo)
    sig = pygit2.Signature("Up Stream", "up@invalid", 1_760_000_000, 0)
    return repo.create_commit(None, sig, sig, message, tree, [parent] if parent else [])


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_VOLTA_CACHE", str(tmp_path / "cache"))
    root = make_root(tmp_path, BASE_FILES)
    for n, (subject, edits) in enumerate(PATCHES):
        commit_change(root, subject, edits, when=1_750_000_000 + n)
    stack.refresh(root, progress=quiet)
    repo = pygit2.Repository(str(root / "upstream"))
    base = repo.revparse_single("refs/heads/main").id
    new = _commit_tree(repo, base, NEW_FILES, "upstream release 0.0.2\n")
    repo.references.create("refs/tags/v0.0.2", new)
    return root


def _repo(root):
    return pygit2.Repository(str(root / "upstream"))


def _fake_index(monkeypatch, tmp_path, files=NEW_FILES, version="0.0.2"):
    """Put an sdist of ``files`` in the cache and make the index list it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, text in sorted({**files, "PKG-INFO": "Name: up\n"}.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"up-{version}/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    name = f"up-{version}.tar.gz"
    cache = tmp_path / "cache" / "sdist"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / name).write_bytes(data)
    rel = releases.Release(version, name, len(data), hashlib.sha256(data).hexdigest(), "2025-09-01T12:00:00+00:00")
    monkeypatch.setattr(releases, "releases", lambda project="vllm", progress=print: [rel])
    return rel


def _resolve_conflict(root):
    text = (root / "upstream" / "a.py").read_text()
    assert "<<<<<<< " in text
    (root / "upstream" / "a.py").write_text(
        A.replace("line 5\n", "ours 5\n").replace("line 25\n", "upstream 25\n").replace("line 15\n", "ours 15\n")
    )


# -- classification ------------------------------------------------------


def test_dry_run_classifies_each_patch_and_changes_nothing(root):
    repo = _repo(root)
    before = (snapshot(root), (root / "pin.toml").read_bytes(), repo.head.name, str(repo.head.target))
    rep = rebase.dry_run(root, "v0.0.2", progress=quiet)
    assert [r.klass for r in rep.rows] == CLASSES
    by = {r.klass: r for r in rep.rows}
    assert by[rebase.CLEAN].detail.startswith("applies exactly")
    assert "a.py: changed upstream (+2 -2 lines), merged" in by[rebase.MERGED].detail
    assert "candidate to drop" in by[rebase.OBSOLETE].detail
    assert "a.py: hunk @@ -" in by[rebase.CONFLICT].detail and "left out" in by[rebase.CONFLICT].detail
    assert "gone.py: gone upstream" in by[rebase.MISSING].detail
    assert by[rebase.MISSING].files == ["gone.py"]
    assert rep.counts() == {k: 1 for k in CLASSES}
    md = rep.markdown()
    assert "| 0004 | 0004-conflict-edit-a-line-15.patch | critical | conflict | a.py |" in md
    assert (snapshot(root), (root / "pin.toml").read_bytes(), repo.head.name, str(repo.head.target)) == before
    assert stack.dirty_paths(repo) == []


def test_conflict_names_only_the_colliding_hunk(tmp_path):
    far = lines(60)
    root = make_root(tmp_path, {"f.py": far})
    commit_change(root, "two hunks", {"f.py": far.replace("line 3\n", "x\n").replace("line 50\n", "y\n")})
    repo = _repo(root)
    base = repo.revparse_single("refs/heads/main")
    up = _commit_tree(repo, base.id, {"f.py": far.replace("line 50\n", "z\n")}, "moved\n")
    old = repo[repo.references[upstream.BRANCH_REF].target]
    step = rebase.classify(repo, repo[up], old)
    assert step.klass == rebase.CONFLICT
    assert step.detail.count("@@") == 2 and "@@ -48,7 +48,7 @@" in step.detail and "@@ -1," not in step.detail


def test_a_patch_follows_a_file_upstream_moved(tmp_path):
    root = make_root(tmp_path, {"old/name.py": A})
    commit_change(root, "edit", {"old/name.py": A.replace("line 5\n", "ours 5\n")})
    repo = _repo(root)
    base = repo.revparse_single("refs/heads/main")
    up = _commit_tree(repo, base.id, {"new/name.py": A}, "moved\n")
    step = rebase.classify(repo, repo[up], repo[repo.references[upstream.BRANCH_REF].target])
    assert step.klass == rebase.MERGED and "moved upstream" in step.detail
    assert b"ours 5" in repo[step.tree]["new/name.py"].data


def test_dry_run_goes_on_without_a_conflicting_patch_and_says_so(tmp_path):
    root = make_root(tmp_path, {"a.py": A})
    commit_change(root, "first", {"a.py": A.replace("line 5\n", "one\n")})
    commit_change(root, "second", {"a.py": A.replace("line 5\n", "two\n")}, when=1_750_000_001)
    stack.refresh(root, progress=quiet)
    repo = _repo(root)
    new = _commit_tree(repo, repo.revparse_single("refs/heads/main").id, {"a.py": A.replace("line 5\n", "up\n")}, "r\n")
    repo.references.create("refs/tags/v0.0.2", new)
    rep = rebase.dry_run(root, "0.0.2", progress=quiet)  # a version finds tag v0.0.2
    assert [r.klass for r in rep.rows] == [rebase.CONFLICT, rebase.CONFLICT]
    assert "replayed without 0001: it touches the same files" in rep.rows[1].detail
    assert any("went on without" in n for n in rep.notes)


def test_a_fix_upstream_status_is_pointed_out_when_the_target_has_it(tmp_path):
    repo = pygit2.init_repository(str(tmp_path / "r"), bare=True)
    sig = pygit2.Signature("D", "d@invalid", 1, 0)
    tree = repo.TreeBuilder().write()
    msg = "s\n\nbody\n\nUpstream-Status: fixed upstream in v0.10.0 (PR #1)\nTier: optional\n"
    old = repo[repo.create_commit(None, sig, sig, msg, tree, [])]
    assert "fixed upstream in v0.10.0" in rebase.status_hint(old, "0.10.1")
    assert rebase.status_hint(old, "0.9.2") == "" and rebase.status_hint(old, "") == ""


# -- stop, continue, abort, accept --------------------------------------


def test_start_stops_at_the_conflict_with_markers_and_touches_no_series_file(root):
    repo = _repo(root)
    before = (snapshot(root), (root / "pin.toml").read_bytes())
    volta, base = repo.references[upstream.BRANCH_REF].target, repo.references[upstream.BASE_REF].target
    rep = rebase.start(root, "v0.0.2", progress=quiet)
    assert rep.stopped
    assert [r.klass for r in rep.rows] == CLASSES[:4] + [rebase.PENDING]
    assert rep.rows[4].detail == "dry run: missing target"
    assert repo.head.name == rebase.ONTO_REF
    assert "<<<<<<< " in (root / "upstream" / "a.py").read_text()
    assert (root / "upstream" / "new.py").exists()  # the work tree is the new upstream
    assert (snapshot(root), (root / "pin.toml").read_bytes()) == before
    assert repo.references[upstream.BRANCH_REF].target == volta
    assert repo.references[upstream.BASE_REF].target == base
    state = rebase.in_progress(root)
    assert repo.references[f"{state['backup']}/volta"].target == volta
    assert repo.references[f"{state['backup']}/base"].target == base
    assert rebase.report_path(upstream.open_upstream(root)).read_text() == rep.markdown()
    again = rebase.start(root, "v0.0.2", progress=quiet)  # a rerun: the same stop, nothing redone
    assert again.stopped and again.markdown() == rep.markdown()
    with pytest.raises(rebase.RebaseError, match="in progress"):
        rebase.start(root, "v0.0.3", progress=quiet)
    with pytest.raises(rebase.RebaseError, match="stopped at"):
        rebase.accept(root, progress=quiet)


def test_continue_refuses_leftover_markers(root):
    rebase.start(root, "v0.0.2", progress=quiet)
    with pytest.raises(rebase.RebaseError, match=r"conflict markers are still in a\.py \(line \d+\)"):
        rebase.cont(root, progress=quiet)


def test_abort_restores_the_previous_state(root):
    repo = _repo(root)
    before = snapshot(root)
    volta = repo.references[upstream.BRANCH_REF].target
    rebase.start(root, "v0.0.2", progress=quiet)
    (root / "upstream" / "a.py").write_text("half-resolved\n")
    state = rebase.in_progress(root)
    rebase.abort(root, progress=quiet)
    assert repo.head.name == upstream.BRANCH_REF and repo.head.target == volta
    assert stack.dirty_paths(repo) == [] and not (root / "upstream" / "new.py").exists()
    assert (root / "upstream" / "gone.py").exists()
    assert repo.references.get(rebase.ONTO_REF) is None
    assert repo.references.get(f"{state['backup']}/replay") is not None
    assert rebase.in_progress(root) is None and snapshot(root) == before
    assert [o.state for o in stack.apply(root, progress=quiet).outcomes] == [stack.ALREADY] * 5


def test_plain_refresh_and_apply_wait_for_the_replay(root, capsys):
    rebase.start(root, "v0.0.2", progress=quiet)
    assert cli.main(["--root", str(root), "refresh"]) == 1
    assert cli.main(["--root", str(root), "apply"]) == 1
    assert "in progress" in capsys.readouterr().err


def test_cli_stops_with_status_1_writes_the_report_and_aborts(root, tmp_path, capsys):
    copy = tmp_path / "copy.md"
    assert cli.main(["--root", str(root), "refresh", "--onto", "v0.0.2", "--report", str(copy)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "replay stopped at 0004-conflict-edit-a-line-15.patch (conflict)" in out
    assert copy.read_text() == rebase.report_path(upstream.open_upstream(root)).read_text()
    assert cli.main(["--root", str(root), "refresh", "--continue"]) == 1  # markers left
    assert cli.main(["--root", str(root), "refresh", "--abort"]) == 0
    assert cli.main(["--root", str(root), "refresh", "--onto", "v0.0.2", "--dry-run"]) == 0
    assert rebase.in_progress(root) is None


def test_continue_takes_a_resolution_the_maintainer_committed(root):
    repo = _repo(root)
    rebase.start(root, "v0.0.2", progress=quiet)
    _resolve_conflict(root)
    repo.index.add("a.py")
    repo.index.write()
    me = pygit2.Signature("Main Tainer", "m@invalid", 1_800_000_000, 0)
    repo.create_commit("HEAD", me, me, "wip\n", repo.index.write_tree(), [repo.head.target])
    repo.state_cleanup()
    rep = rebase.cont(root, progress=quiet)
    state = rebase.in_progress(root)
    resolved = repo[repo.references[rebase.ONTO_REF].target]
    assert resolved.message.startswith("conflict: edit a line 15\n")
    assert resolved.author.name == "Dev Eloper" and resolved.committer == resolved.author
    assert rep.rows[3].detail.endswith(f"resolved by hand as {resolved.short_id}")
    assert state["stopped"]["index"] == 4  # then the missing target stops it


def test_continue_then_accept_moves_the_pin_and_rewrites_the_series(root, tmp_path, monkeypatch):
    rel = _fake_index(monkeypatch, tmp_path)
    repo = _repo(root)
    old_volta = repo.references[upstream.BRANCH_REF].target
    rep = rebase.start(root, "0.0.2", progress=quiet)  # no ref 0.0.2 / v0.0.2 wins? the tag does
    assert rep.onto.source == rebase.SOURCE_REF
    rebase.abort(root, progress=quiet)
    repo.references.delete("refs/tags/v0.0.2")

    rep = rebase.start(root, "0.0.2", progress=quiet)
    assert rep.onto.source == rebase.SOURCE_SDIST and rep.onto.ref == "refs/volta/upstream/0.0.2"
    assert "PKG-INFO" not in repo[rep.onto.base].tree
    assert [r.klass for r in rep.rows][:4] == CLASSES[:4]
    _resolve_conflict(root)  # edited, not added: --continue stages it
    rep = rebase.cont(root, progress=quiet)
    assert rep.stopped and rep.rows[4].klass == rebase.MISSING
    assert (root / "upstream" / "gone.py").exists()  # the patch's version, to resolve
    (root / "upstream" / "gone.py").unlink()  # drop the change: the file is gone upstream
    rep = rebase.cont(root, progress=quiet)
    assert not rep.stopped and "left out of the replay" in rep.rows[4].detail
    assert rebase.in_progress(root)["stopped"] is None

    done = rebase.accept(root, progress=quiet)
    pin = upstream.Pin.load(root)
    assert (pin.version, pin.tag, pin.commit) == ("0.0.2", "v0.0.2", "")
    assert "NOT KNOWN" in (root / "pin.toml").read_text()
    assert (pin.sdist.filename, pin.sdist.sha256, pin.sdist.size) == (rel.filename, rel.sha256, rel.size)
    assert pin.sdist.commit == done.base == rep.onto.base
    assert str(pin.sdist.date.date()) == "2025-09-01" and pin.sdist.exclude == ("PKG-INFO",)
    assert sorted(p.name for p in (root / "patches").iterdir()) == [
        "0001-clean-edit-c.patch", "0002-merged-edit-a-near-the-top.patch", "0003-conflict-edit-a-line-15.patch"]
    assert check.check(root) == []
    assert repo.head.name == upstream.BRANCH_REF and str(repo.references[upstream.BASE_REF].target) == done.base
    assert rebase.in_progress(root) is None and repo.references.get(rebase.ONTO_REF) is None
    assert any(r.endswith("/volta") and repo.references[r].target == old_volta
               for r in repo.references if r.startswith(rebase.PRE_ONTO_PREFIX))

    # The moved pin reproduces: a fresh checkout imports the same base, applies, refreshes to no change.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for sub in ("pin.toml", "series", "patches", "tests"):
        (shutil.copytree if (root / sub).is_dir() else shutil.copy)(root / sub, fresh / sub)
    result = stack.apply(fresh, progress=quiet)
    assert str(result.upstream.base.id) == done.base
    assert [o.state for o in result.outcomes] == [stack.APPLIED] * 3
    assert stack.refresh(fresh, progress=quiet).changed == []


def test_accept_refuses_when_the_series_changed_meanwhile(root):
    rebase.start(root, "v0.0.2", progress=quiet)
    _resolve_conflict(root)
    rebase.cont(root, progress=quiet)
    (root / "upstream" / "gone.py").unlink()
    rebase.cont(root, progress=quiet)
    (root / "series" / "series").write_text((root / "series" / "series").read_text() + "# edited\n")
    with pytest.raises(rebase.RebaseError, match="changed since the replay started"):
        rebase.accept(root, progress=quiet)


def test_a_replay_without_conflicts_completes_at_once(tmp_path):
    root = make_root(tmp_path, {"a.py": A})
    commit_change(root, "edit", {"a.py": A.replace("line 5\n", "ours 5\n")})
    stack.refresh(root, progress=quiet)
    repo = _repo(root)
    new = _commit_tree(repo, repo.revparse_single("refs/heads/main").id, {"a.py": A.replace("line 25\n", "u\n")}, "r\n")
    rep = rebase.start(root, str(new), progress=quiet)  # a bare commit id
    assert not rep.stopped and [r.klass for r in rep.rows] == [rebase.MERGED]
    text = (root / "upstream" / "a.py").read_text()
    assert "ours 5" in text and "\nu\n" in text and stack.dirty_paths(repo) == []
    with pytest.raises(rebase.RebaseError, match="names no vLLM version"):
        rebase.accept(root, progress=quiet)


# -- releases and upstream-report --------------------------------------


def _page(files):
    return ProjectPage.from_json_data(
        {"meta": {"api-version": "1.1"}, "name": "vllm", "files": files}, "https://index.invalid/simple/vllm/")


def test_releases_keep_final_unyanked_sdists_newest_first():
    def f(name, **kw):
        return {"filename": name, "url": f"https://index.invalid/{name}", "hashes": {"sha256": "AB12"},
                "size": 10, "upload-time": "2025-07-25T00:22:27Z", **kw}
    page = _page([
        f("vllm-0.9.2.tar.gz"), f("vllm-0.10.0.tar.gz"), f("vllm-0.10.1rc1.tar.gz"),
        f("vllm-0.10.0-cp38-abi3-manylinux1_x86_64.whl"), f("vllm-0.11.0.tar.gz", yanked="broken"),
        f("vllm-0.10.1.1.tar.gz"),
    ])
    found = releases.from_packages(page.packages)
    assert [r.version for r in found] == ["0.10.1.1", "0.10.0", "0.9.2"]
    assert found[1].filename == "vllm-0.10.0.tar.gz" and found[1].sha256 == "ab12"
    assert found[1].import_date.isoformat() == "2025-07-25T00:00:00+00:00"


def test_release_lookup_falls_back_to_the_cached_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_VOLTA_CACHE", str(tmp_path))
    monkeypatch.setenv("VLLM_VOLTA_SDIST_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens there
    with pytest.raises(releases.ReleaseError, match="no earlier answer"):
        releases.find("0.10.0", progress=quiet)
    rel = releases.Release("0.10.0", "vllm-0.10.0.tar.gz", 5, "ab", "2025-07-25T00:22:27+00:00")
    releases._save("vllm", [rel])
    said = []
    assert releases.find("0.10.0", progress=said.append) == rel
    assert "cached" in said[0]
    with pytest.raises(releases.ReleaseError, match="no final sdist of vllm 0.12.0"):
        releases.find("0.12.0", progress=quiet)


def test_upstream_report_dry_runs_each_release(root, tmp_path, monkeypatch):
    rel = _fake_index(monkeypatch, tmp_path)
    same = _fake_index(monkeypatch, tmp_path, files=BASE_FILES, version="0.0.1")
    monkeypatch.setattr(releases, "releases", lambda project="vllm", progress=print: [rel, same])
    reps = rebase.upstream_report(root, count=2, progress=quiet)
    assert [r.onto.label for r in reps] == ["vLLM 0.0.2", "vLLM 0.0.1"]
    assert [r.klass for r in reps[0].rows] == CLASSES
    assert [r.klass for r in reps[1].rows] == [rebase.CLEAN] * 5
    md = rebase.upstream_markdown(reps)
    assert "| # | patch | tier | vLLM 0.0.2 | vLLM 0.0.1 |" in md
    assert "| 0005 | 0005-missing-edit-gone.patch | critical | missing target | clean |" in md
    assert cli.main(["--root", str(root), "upstream-report", "-n", "1", "--report", str(tmp_path / "u.md")]) == 0
    assert (tmp_path / "u.md").read_text().startswith("# vllm-volta series on the newest vLLM releases")
