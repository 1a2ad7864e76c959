"""Issue 13: no command loses a patch, a series line, the pin or an edit; its advice is safe.

One test per case of the issue (numbered as there), on small synthetic trees.
"""

import gzip
import hashlib
import io
import tarfile
import threading
from pathlib import Path

import pygit2
import pytest

from vllm_volta.series import cli, faults, guard, prove, rebase, stack, upstream, worktree

from .synth import PIN, commit_change, lines, make_root, snapshot
from .test_rebase import A, BASE_FILES, NEW_FILES, PATCHES, _commit_tree, _resolve_conflict  # noqa: F401 (A: used by test_interrupt)

quiet = lambda *_: None  # noqa: E731


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_VOLTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VLLM_VOLTA_LOCK_WAIT", "0.3")


def _repo(root):
    return pygit2.Repository(str(root / "upstream"))


def _rebase_root(tmp_path):
    root = make_root(tmp_path, BASE_FILES)
    for n, (subject, edits) in enumerate(PATCHES):
        commit_change(root, subject, edits, when=1_750_000_000 + n)
    stack.refresh(root, progress=quiet)
    repo = _repo(root)
    base = repo.revparse_single("refs/heads/main").id
    repo.references.create("refs/tags/v0.0.2", _commit_tree(repo, base, NEW_FILES, "upstream release 0.0.2\n"))
    return root


def _three(tmp_path):
    root = make_root(tmp_path, {"a.py": lines(30), "pkg/b.py": lines(10, "b")})
    commit_change(root, "first: edit a", {"a.py": lines(30).replace("line 5\n", "LINE 5\n")})
    commit_change(root, "second: add c", {"pkg/c.py": "new file\n"}, tier="recommended")
    commit_change(root, "third: edit b", {"pkg/b.py": "b 0\n"}, tier="optional")
    stack.refresh(root, progress=quiet)
    return root


def _kill_at(label_part, nth=1):
    """A hook that raises Interrupted at the nth point whose label contains ``label_part``."""
    seen = [0]

    def hook(label):
        if label_part in label:
            seen[0] += 1
            if seen[0] == nth:
                raise faults.Interrupted(label)

    return hook


def _interrupt(fn, hook):
    faults.install(hook)
    try:
        with pytest.raises(faults.Interrupted):
            fn()
    finally:
        faults.install(None)


def _pins(root):
    return (snapshot(root), (root / "pin.toml").read_bytes())


# -- 1. an interrupted refresh --onto ---------------------------------------


def test_1a_continue_after_a_kill_once_state_exists_finishes_the_replay(tmp_path):
    root = _rebase_root(tmp_path)
    before = _pins(root)
    _interrupt(lambda: rebase.start(root, "v0.0.2", progress=quiet), _kill_at("move volta-onto"))
    state = rebase.in_progress(root)
    assert state is not None and state["rows"] == []
    # was: "the replay onto ... is complete" and --accept wiped the series
    with pytest.raises(rebase.RebaseError, match="interrupted after 0 of 5 patches"):
        rebase.accept(root, progress=quiet)
    assert _pins(root) == before
    rep = rebase.cont(root, progress=quiet)
    assert rep.stopped and [r.klass for r in rep.rows][:4] == [rebase.CLEAN, rebase.MERGED, rebase.OBSOLETE, rebase.CONFLICT]
    assert "<<<<<<< " in (root / "upstream" / "a.py").read_text()


def test_1b_accept_of_an_interrupted_replay_refuses_and_keeps_the_series(tmp_path):
    root = _rebase_root(tmp_path)
    before = _pins(root)
    _interrupt(lambda: rebase.start(root, "v0.0.2", progress=quiet), _kill_at("save state.json", 2))
    with pytest.raises(rebase.RebaseError, match="nothing was accepted"):
        rebase.accept(root, progress=quiet)
    assert _pins(root) == before
    assert len(stack.chain(upstream.open_upstream(root))) == 5


@pytest.mark.parametrize("nth", [1, 3, 6])
def test_1c_abort_killed_in_its_checkout_then_rerun_is_clean(tmp_path, nth):
    root = _rebase_root(tmp_path)
    rebase.start(root, "v0.0.2", progress=quiet)
    repo = _repo(root)
    volta = repo[repo.references[upstream.BRANCH_REF].target]
    _interrupt(lambda: rebase.abort(root, progress=quiet), _kill_at("", nth))
    rebase.abort(root, progress=quiet)
    repo = _repo(root)
    assert repo.head.name == upstream.BRANCH_REF and repo.head.target == volta.id
    assert stack.dirty_paths(repo) == []  # was: hundreds of staged and deleted paths
    assert sorted(worktree.blobs(volta.tree)) == sorted(
        str(p.relative_to(root / "upstream")) for p in (root / "upstream").rglob("*") if p.is_file() and ".git" not in p.parts)
    assert rebase.in_progress(root) is None


def test_1c_abort_after_a_kill_in_the_cherry_pick_clears_the_stale_index_lock(tmp_path):
    root = _rebase_root(tmp_path)
    _interrupt(lambda: rebase.start(root, "v0.0.2", progress=quiet), _kill_at("pick: "))
    (root / "upstream" / ".git" / "index.lock").write_text("")  # what a kill inside libgit2 leaves
    said = []
    rebase.abort(root, progress=said.append)  # was: a traceback about index.lock
    assert any("index.lock" in s for s in said)
    assert stack.dirty_paths(_repo(root)) == []


def test_1c_abort_keeps_an_unfinished_resolution(tmp_path):
    root = _rebase_root(tmp_path)
    rebase.start(root, "v0.0.2", progress=quiet)
    _resolve_conflict(root)
    kept = rebase.abort(root, progress=quiet)
    assert "unfinished" in kept
    state_ref = [r for r in _repo(root).references if r.endswith("/unfinished")][0]
    assert b"ours 15" in _repo(root).references[state_ref].peel(pygit2.Commit).tree["a.py"].data


def test_9_abort_removes_the_replay_report(tmp_path):
    root = _rebase_root(tmp_path)
    rebase.start(root, "v0.0.2", progress=quiet)
    report = rebase.report_path(upstream.open_upstream(root))
    assert report.exists()
    rebase.abort(root, progress=quiet)
    assert not report.exists()


# -- 2. refresh deletes or overwrites patches/ --------------------------------


def test_2a_refresh_without_branch_volta_refuses(tmp_path):
    root = _three(tmp_path)
    before = snapshot(root)
    repo = _repo(root)
    repo.set_head("refs/heads/main")
    repo.references.delete(upstream.BRANCH_REF)
    with pytest.raises(stack.StackError, match="no branch volta"):
        stack.refresh(root, progress=quiet)
    assert snapshot(root) == before


def test_2b_refresh_on_a_shorter_branch_refuses_and_says_apply(tmp_path):
    root = _three(tmp_path)
    stack.apply(root, tier="critical", progress=quiet)
    edited = root / "patches" / "0003-third-edit-b.patch"
    edited.write_text(edited.read_text().replace("What it does.", "What it does, edited."))
    before = snapshot(root)
    with pytest.raises(stack.StackError) as err:
        stack.refresh(root, progress=quiet)
    assert "0002-second-add-c.patch" in str(err.value) and "`nox -s apply`" in str(err.value)
    assert snapshot(root) == before
    stack.apply(root, progress=quiet)  # following the advice: the edited 0003 is applied as it is
    assert stack.refresh(root, progress=quiet).changed == []
    assert snapshot(root) == before


def test_2c_refresh_keeps_an_untracked_patch_file(tmp_path):
    root = _three(tmp_path)
    extra = root / "patches" / "0004-my-new-work.patch"
    extra.write_text("my work, in no commit\n")
    with pytest.raises(stack.StackError, match="0004-my-new-work.patch no commit of branch volta holds it"):
        stack.refresh(root, progress=quiet)
    assert extra.read_text() == "my work, in no commit\n"
    result = stack.refresh(root, force=True, progress=quiet)
    assert not extra.exists()
    assert (Path(result.backup) / "patches" / extra.name).read_text() == "my work, in no commit\n"


def test_2d_apply_advice_for_extra_commits_is_safe_to_follow(tmp_path):
    root = _three(tmp_path)
    stack.apply(root, tier="critical", progress=quiet)
    tip = commit_change(root, "fourth: new work", {"d.py": "d\n"})
    before = snapshot(root)
    with pytest.raises(stack.StackError) as err:
        stack.apply(root, progress=quiet)
    assert "a refresh now would refuse" in str(err.value)
    with pytest.raises(stack.StackError):  # a refresh would drop 0002 and 0003: refused
        stack.refresh(root, progress=quiet)
    assert snapshot(root) == before
    result = stack.apply(root, force=True, progress=quiet)
    assert _repo(root).references[result.backup].target == tip  # the new work is kept, named


# -- 3. prove leaves upstream/ as it was ---------------------------------------


def test_3_prove_does_not_touch_the_index_and_apply_repairs_an_old_damage(tmp_path):
    root = make_root(tmp_path, {"a.py": lines(10)})
    commit_change(root, "edit a", {"a.py": lines(10).replace("line 5", "LINE 5")})
    stack.refresh(root, progress=quiet)
    up = upstream.open_upstream(root)
    prove.prove(root)
    repo = _repo(root)
    assert stack.dirty_paths(repo) == []  # was: the index held the pristine tree
    assert repo.index.write_tree() == repo[repo.head.target].tree.id
    # an index an older prove rewrote: apply resets it (every file is as the branch has it)
    repo.index.read_tree(up.base.tree)
    repo.index.write()
    said = []
    stack.apply(root, progress=said.append)
    assert any("index reset" in s for s in said)
    assert stack.dirty_paths(_repo(root)) == []


# -- 4. an interrupted apply ------------------------------------------------


def _sdist_root(tmp_path):
    """A checkout with no upstream/ and a pin naming a fake sdist in the cache."""
    root = make_root(tmp_path, {"a.py": lines(30)})
    commit_change(root, "first: edit a", {"a.py": lines(30).replace("line 5\n", "LINE 5\n")})
    stack.refresh(root, progress=quiet)
    import shutil

    shutil.rmtree(root / "upstream")
    (root / "upstream").mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in {"a.py": lines(30), "pkg/b.py": "b\n", "PKG-INFO": "x\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"up-0.0.1/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(buf.getvalue(), mtime=0)  # the same bytes every time
    cache = tmp_path / "cache" / "sdist"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "up-0.0.1.tar.gz").write_bytes(data)
    pin = PIN.format(commit="0" * 40).replace('sha256 = "00"', f'sha256 = "{hashlib.sha256(data).hexdigest()}"')
    (root / "pin.toml").write_text(pin)
    return root


@pytest.mark.parametrize("where", ["init staging", "base refs", "checkout the import", "move the import"])
def test_4a_apply_killed_during_the_sdist_import_recovers(tmp_path, where):
    root = _sdist_root(tmp_path)
    _interrupt(lambda: stack.apply(root, progress=quiet), _kill_at(where))
    result = stack.apply(root, progress=quiet)  # was: "run `git submodule update --init`"
    assert [o.state for o in result.outcomes] == [stack.APPLIED]
    assert stack.dirty_paths(_repo(root)) == [] and not (root / upstream.STAGING).exists()
    assert "LINE 5" in (root / "upstream" / "a.py").read_text()


def test_4a_a_half_import_left_by_an_older_engine_is_recovered(tmp_path):
    root = _sdist_root(tmp_path)
    pygit2.init_repository(str(root / "upstream"), initial_head="volta")  # objects only, no refs
    result = stack.apply(root, progress=quiet)
    assert [o.state for o in result.outcomes] == [stack.APPLIED]


def test_4b_a_checkout_cut_short_is_finished_not_taken_for_edits(tmp_path):
    root = _sdist_root(tmp_path)
    upstream.materialize(root, progress=quiet)
    (root / "upstream" / "pkg" / "b.py").unlink()  # what a kill during the checkout leaves
    (root / "upstream" / "a.py").unlink()
    result = stack.apply(root, progress=quiet)  # was: reported as edits, and `stash -u` deleted files
    assert [o.state for o in result.outcomes] == [stack.APPLIED]
    assert (root / "upstream" / "pkg" / "b.py").exists()


@pytest.mark.parametrize("where", ["apply ", "commit "])
def test_4c_apply_killed_while_patches_apply_recovers(tmp_path, where):
    root = _three(tmp_path)
    from .synth import reset_upstream

    reset_upstream(root)
    ids = None
    _interrupt(lambda: stack.apply(root, progress=quiet), _kill_at(where, 2))
    (root / "upstream" / ".git" / "index.lock").write_text("")  # a kill inside libgit2's index write
    said = []
    result = stack.apply(root, progress=said.append)  # was: a traceback about index.lock
    assert all(o.state in (stack.APPLIED, stack.ALREADY) for o in result.outcomes) and len(result.outcomes) == 3
    assert any("interrupted apply" in s for s in said)
    assert stack.dirty_paths(_repo(root)) == [] and ids is None


def test_4d_a_second_apply_waits_then_refuses_clearly(tmp_path):
    root = _three(tmp_path)
    held, release = threading.Event(), threading.Event()

    def other():
        with guard.checkout(root, quiet):
            held.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(guard.Busy, match="in use by another vllm-volta run"):
            stack.apply(root, progress=quiet)
    finally:
        release.set()
        t.join()
    assert stack.apply(root, progress=quiet).ok


# -- 5. one line, no traceback ------------------------------------------------


def _cli_fails(capsys, root, *argv):
    rc = cli.main(["--root", str(root), *argv])
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == 1, text
    assert "Traceback" not in text
    return text


def test_5_corrupt_hunk_missing_file_bad_date_and_bad_pin_are_one_line(tmp_path, capsys):
    root = _three(tmp_path)
    p1 = root / "patches" / "0001-first-edit-a.patch"
    good = p1.read_text()
    p1.write_text(good.replace("@@ -3,7 +3,7 @@", "@@ -3,7 +3,99 @@"))
    assert "0001-first-edit-a.patch" in _cli_fails(capsys, root, "apply")
    assert "0001-first-edit-a.patch" in _cli_fails(capsys, root, "check")
    p1.write_text(good.replace("Date: ", "Date: not a date ", 1))
    assert "0001-first-edit-a.patch" in _cli_fails(capsys, root, "apply")
    assert "0001-first-edit-a.patch" in _cli_fails(capsys, root, "check")
    p1.unlink()
    text = _cli_fails(capsys, root, "apply")
    assert "0001-first-edit-a.patch" in text and "git checkout" in text
    p1.write_text(good)
    (root / "pin.toml").write_text("[upstream\nversion = ")
    assert "pin.toml" in _cli_fails(capsys, root, "apply")
    (root / "pin.toml").write_text("[upstream]\nversion = '1'\n")
    assert "pin.toml" in _cli_fails(capsys, root, "apply")


def test_5_unreachable_index_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLLM_VOLTA_SDIST_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens there
    root = _sdist_root(tmp_path)
    (tmp_path / "cache" / "sdist" / "up-0.0.1.tar.gz").unlink()
    text = _cli_fails(capsys, root, "apply")
    assert "127.0.0.1:9" in text and "VLLM_VOLTA_SDIST_INDEX_URL" in text
    root2 = _rebase_root(tmp_path / "two")
    text = _cli_fails(capsys, root2, "refresh", "--onto", "0.0.3")
    assert "127.0.0.1:9" in text
    assert "127.0.0.1:9" in _cli_fails(capsys, root2, "upstream-report", "0.0.3")


# -- 7. the sdist index is not the upload index --------------------------------


def test_7_the_upload_index_setting_does_not_move_the_sdist_index(monkeypatch):
    monkeypatch.delenv("VLLM_VOLTA_SDIST_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setenv("VLLM_VOLTA_INDEX_URL", "https://pkgs.example.com/")
    assert upstream.sdist_index() == (upstream.DEFAULT_INDEX, "default")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example.com/simple/")
    assert upstream.sdist_index() == ("https://mirror.example.com/simple/", "PIP_INDEX_URL")
    monkeypatch.setenv("VLLM_VOLTA_SDIST_INDEX_URL", "https://other.example.com/simple/")
    assert upstream.sdist_index()[1] == "VLLM_VOLTA_SDIST_INDEX_URL"


# -- 9. smaller ones ------------------------------------------------------------


def test_9_stray_downloads_are_removed_from_the_cache(tmp_path):
    root = _sdist_root(tmp_path)
    stray = tmp_path / "cache" / "sdist" / ".download-abc123"
    stray.write_bytes(b"half")
    upstream.fetch_sdist(upstream.Pin.load(root), progress=quiet)
    assert not stray.exists()


def test_9_status_fails_when_a_listed_patch_is_missing(tmp_path, capsys):
    root = _three(tmp_path)
    (root / "patches" / "0002-second-add-c.patch").unlink()
    text = _cli_fails(capsys, root, "status")
    assert "0002-second-add-c.patch" in text


# -- 8. the rebase follows a rename among many other moves ----------------------


def test_8_a_patch_follows_its_file_renamed_among_more_files_than_the_rename_limit(tmp_path):
    body = "".join(f"config line {i}\n" for i in range(200))
    files = {"vllm/config.py": body, **{f"old/f{i}.py": f"old unique {i} " * 20 + "\n" for i in range(1200)}}
    root = make_root(tmp_path, files)
    commit_change(root, "edit config", {"vllm/config.py": body.replace("config line 10\n", "ours 10\n")})
    stack.refresh(root, progress=quiet)
    repo = _repo(root)
    # upstream moved config.py into a package (and edited it), and replaced 1,200 other files
    moved = {"vllm/config/__init__.py": body.replace("config line 150\n", "upstream 150\n"),
             **{f"new/g{i}.py": f"new other {i} " * 20 + "\n" for i in range(1200)}}
    new = _commit_tree(repo, repo.revparse_single("refs/heads/main").id, moved, "0.0.2\n")
    rep = rebase.dry_run(root, str(new), progress=quiet)
    assert [r.klass for r in rep.rows] == [rebase.MERGED], rep.rows[0].detail  # was: missing target
    assert "moved upstream; the merge followed it" in rep.rows[0].detail


def test_9_check_fails_a_series_that_does_not_apply(tmp_path):
    root = nl_three = _three(tmp_path)
    from vllm_volta.series import check

    assert check.check(root) == []
    repo = _repo(nl_three)
    before = (str(repo.head.target), repo.index.write_tree())
    p = root / "patches" / "0003-third-edit-b.patch"
    p.write_text(p.read_text().replace("-b 1\n", "-b one\n").replace(" b 1\n", " b one\n"))
    problems = check.check(root)
    assert [x.where for x in problems] == ["patches/0003-third-edit-b.patch"], problems
    assert "does not apply" in problems[0].what
    assert (str(repo.head.target), repo.index.write_tree()) == before


def test_apply_and_refresh_refuse_during_a_replay_at_the_engine_too(tmp_path):
    root = _rebase_root(tmp_path)
    rebase.start(root, "v0.0.2", progress=quiet)
    before = _pins(root)
    for run in (lambda: stack.apply(root, progress=quiet), lambda: stack.refresh(root, progress=quiet)):
        with pytest.raises(stack.StackError, match="replay .* is in progress"):
            run()
    assert _pins(root) == before and rebase.in_progress(root)["stopped"] is not None


def test_8_a_stopped_replay_leaves_the_same_merge_the_dry_run_classified(tmp_path):
    body = "".join(f"config line {i}\n" for i in range(200))
    files = {"vllm/config.py": body, "cuda.py": lines(20, "c"),
             **{f"old/f{i}.py": f"old unique {i} " * 20 + "\n" for i in range(1200)}}
    root = make_root(tmp_path, files)
    commit_change(root, "edit config and cuda", {"vllm/config.py": body.replace("config line 10\n", "ours 10\n"),
                                                 "cuda.py": lines(20, "c").replace("c 5\n", "ours 5\n")})
    stack.refresh(root, progress=quiet)
    repo = _repo(root)
    moved = {"vllm/config/__init__.py": body.replace("config line 150\n", "upstream 150\n"),
             "cuda.py": lines(20, "c").replace("c 5\n", "upstream 5\n"),
             **{f"new/g{i}.py": f"new other {i} " * 20 + "\n" for i in range(1200)}}
    new = _commit_tree(repo, repo.revparse_single("refs/heads/main").id, moved, "0.0.2\n")
    rep = rebase.start(root, str(new), progress=quiet)
    assert rep.stopped and rep.rows[0].klass == rebase.CONFLICT and rep.rows[0].detail.startswith("cuda.py: hunk")
    work = root / "upstream"
    assert "<<<<<<< " in (work / "cuda.py").read_text()
    merged = (work / "vllm" / "config" / "__init__.py").read_text()
    assert "ours 10" in merged and "upstream 150" in merged and "<<<<<<<" not in merged
    assert not (work / "vllm" / "config.py").exists()  # was: left as "gone upstream"
    assert rebase.in_progress(root)["stopped"]["paths"] == ["cuda.py"]
