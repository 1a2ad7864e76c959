from pathlib import Path

import pygit2
import pytest

from vllm_volta.series import check, model, stack, upstream

from .synth import commit_change, lines, make_root, reset_upstream, snapshot

quiet = lambda *_: None  # noqa: E731


@pytest.fixture
def root(tmp_path):
    root = make_root(tmp_path, {"a.py": lines(30), "pkg/b.py": lines(10, "b"), "csrc/attention/k.cu": "k\n"})
    commit_change(root, "first: edit a", {"a.py": lines(30).replace("line 5\n", "LINE 5\n")})
    commit_change(root, "second: add c", {"pkg/c.py": "new file\n"}, tier="recommended")
    commit_change(root, "third: edit b and a", {"pkg/b.py": "b 0\n", "a.py": lines(30).replace("line 5\n", "LINE 5\n").replace("line 25\n", "x\n")}, tier="optional")
    stack.refresh(root, progress=quiet)
    return root


def branch_ids(root):
    up = upstream.open_upstream(root)
    return [str(c.id) for c in stack.chain(up)]


def test_refresh_writes_numbered_patches_and_tiered_series(root):
    names = sorted(p.name for p in (root / "patches").iterdir())
    assert names == ["0001-first-edit-a.patch", "0002-second-add-c.patch", "0003-third-edit-b-and-a.patch"]
    series = model.Series.load(root)
    assert [(e.name[:4], e.tier) for e in series.entries] == [
        ("0001", "critical"), ("0002", "recommended"), ("0003", "optional")]
    text = (root / "patches" / names[0]).read_text()
    assert text.startswith("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n")
    assert "\nindex " in text and "-- \n" not in text


def test_apply_on_pristine_then_refresh_is_byte_identical(root):
    before = snapshot(root)
    ids = branch_ids(root)
    reset_upstream(root)
    result = stack.apply(root, progress=quiet)
    assert [o.state for o in result.outcomes] == [stack.APPLIED] * 3
    assert branch_ids(root) == ids  # committer = author: the same commits again
    changed = stack.refresh(root, progress=quiet).changed
    assert changed == []
    assert snapshot(root) == before


def test_apply_twice_changes_nothing(root):
    reset_upstream(root)
    stack.apply(root, progress=quiet)
    tip = branch_ids(root)
    again = stack.apply(root, progress=quiet)
    assert [o.state for o in again.outcomes] == [stack.ALREADY] * 3
    assert branch_ids(root) == tip


def test_tier_prefix_and_back(root):
    reset_upstream(root)
    crit = stack.apply(root, tier="critical", progress=quiet)
    assert [o.state for o in crit.outcomes] == [stack.APPLIED]
    assert len(branch_ids(root)) == 1
    stack.apply(root, progress=quiet)
    assert len(branch_ids(root)) == 3
    # going back to a prefix drops only commits the series holds
    back = stack.apply(root, tier="recommended", progress=quiet)
    assert len(branch_ids(root)) == 2
    assert [o.state for o in back.outcomes] == [stack.ALREADY, stack.ALREADY, stack.UNAPPLIED]


def test_refuses_uncommitted_edits_and_keeps_them(root):
    edited = root / "upstream" / "a.py"
    edited.write_text("my work\n")
    with pytest.raises(stack.StackError) as err:
        stack.apply(root, progress=quiet)
    assert "a.py" in str(err.value) and "--force" in str(err.value) and "stash" not in str(err.value)
    assert edited.read_text() == "my work\n"
    # the advice is safe to follow: --force keeps the edit as a commit it names
    result = stack.apply(root, force=True, progress=quiet)
    repo = pygit2.Repository(str(root / "upstream"))
    kept = repo.references[result.backup].peel(pygit2.Commit)
    assert kept.tree["a.py"].data == b"my work\n"
    assert stack.dirty_paths(repo) == []


def test_refuses_branch_commits_not_in_series_unless_forced(root):
    tip_before = commit_change(root, "fourth: unsaved work", {"d.py": "d\n"}, tier="optional")
    with pytest.raises(stack.StackError, match="not in the series"):
        stack.apply(root, progress=quiet)
    assert branch_ids(root)[-1] == str(tip_before)
    result = stack.apply(root, force=True, progress=quiet)
    assert result.backup
    repo = pygit2.Repository(str(root / "upstream"))
    assert str(repo.references[result.backup].target) == str(tip_before)
    assert len(branch_ids(root)) == 3


def test_conflict_names_file_and_hunk_and_stops_at_last_good(root):
    reset_upstream(root)
    repo = pygit2.Repository(str(root / "upstream"))
    # upstream moved under patch 0003: its hunk in a.py no longer matches
    (root / "upstream" / "a.py").write_text(lines(30).replace("line 24\n", "moved\n"))
    repo.index.add("a.py")
    repo.index.write()
    sig = pygit2.Signature("Up", "up@invalid", 1_700_000_100, 0)
    new_base = repo.create_commit(None, sig, sig, "upstream moved\n", repo.index.write_tree(), [repo.head.target])
    repo.references.create(upstream.BASE_REF, new_base, force=True)
    repo.references.create(upstream.BRANCH_REF, new_base, force=True)
    with pytest.raises(stack.ApplyConflict) as err:
        stack.apply(root, progress=quiet)
    states = [o.state for o in err.value.result.outcomes]
    assert states == [stack.APPLIED, stack.APPLIED, stack.CONFLICT]
    detail = err.value.result.outcomes[2].detail
    assert "a.py" in detail and "@@ -" in detail and "pkg/b.py" not in detail
    assert len(branch_ids(root)) == 2
    assert stack.dirty_paths(repo) == []


def test_refresh_renumbers_after_a_patch_is_dropped(root):
    up = upstream.open_upstream(root)
    repo = up.repo
    first, second, third = stack.chain(up)
    # drop "second" by re-committing "third" onto "first"
    sig = third.author
    tree = repo.merge_trees(second.tree, third.tree, first.tree)  # ancestor, ours, theirs
    new_tree = tree.write_tree(repo)
    new = repo.create_commit(None, sig, sig, third.message, new_tree, [first.id])
    repo.references.create(upstream.BRANCH_REF, new, force=True)
    repo.checkout(upstream.BRANCH_REF, strategy=pygit2.enums.CheckoutStrategy.FORCE)
    # 0002 is in no commit of the branch now: refresh refuses to drop it without --force
    with pytest.raises(stack.StackError, match="0002-second-add-c.patch no commit of branch volta holds it"):
        stack.refresh(root, progress=quiet)
    result = stack.refresh(root, force=True, progress=quiet)
    assert (Path(result.backup) / "patches" / "0002-second-add-c.patch").exists()
    assert sorted(p.name for p in (root / "patches").iterdir()) == [
        "0001-first-edit-a.patch", "0002-third-edit-b-and-a.patch"]
    states = dict(result.files)
    assert states["patches/0001-first-edit-a.patch"] == stack.UNCHANGED
    assert states["patches/0003-third-edit-b-and-a.patch"] == stack.REMOVED
    assert check.check(root) == []


def test_status_rows(root):
    rows = stack.status(root)
    assert [r.state for r in rows] == [stack.ALREADY] * 3
