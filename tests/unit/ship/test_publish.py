import pytest
import requests
from rich.console import Console

from vllm_volta.ship import publish
from vllm_volta.ship.index import IndexFile, IndexProblem, load_config
from vllm_volta.ship.publish import PublishRefused, check_index, prepare, refuse_conflicts, render_plan

from .wheels import vllm_wheel

CONFIG = load_config({"VLLM_VOLTA_INDEX_URL": "http://127.0.0.1:9/", "VLLM_VOLTA_INDEX_TOKEN": "t"})


def _listing(files):
    def fake(config, project, session=None):
        return [f for f in files if f.filename.startswith(project.replace("-", "_") + "-")]
    return fake


def test_prepare_orders_vllm_then_meta(tmp_path):
    vllm_wheel(tmp_path, "0.9.2+volta.5")
    plan = prepare(tmp_path)
    names = [u.artifact.name for u in plan.uploads]
    assert names == ["vllm", "vllm-volta"]
    assert str(plan.uploads[1].artifact.version) == "0.9.2.5"
    assert (tmp_path / "vllm_volta-0.9.2.5-py3-none-any.whl.sha256").is_file()


def test_empty_build_needs_explicit_permission(tmp_path):
    vllm_wheel(tmp_path, "0.9.2+volta.5.empty")
    with pytest.raises(PublishRefused, match="--allow-empty-build"):
        prepare(tmp_path)
    assert prepare(tmp_path, allow_empty_build=True).series.is_empty_build


def test_dev_build_needs_explicit_permission(tmp_path):
    vllm_wheel(tmp_path, "0.9.2+volta.5.1.dev2.gab12")
    with pytest.raises(PublishRefused, match="untagged development build"):
        prepare(tmp_path)
    plan = prepare(tmp_path, allow_dev_build=True)
    assert str(plan.uploads[-1].artifact.version) == "0.9.2.5.1+dev2.gab12"


def test_dry_run_table(tmp_path, monkeypatch):
    vllm_wheel(tmp_path, "0.9.2+volta.5")
    plan = prepare(tmp_path)
    monkeypatch.setattr(publish, "list_project_files", _listing([]))
    check_index(plan, CONFIG)
    console = Console(record=True, width=200)
    render_plan(plan, console, title="DRY RUN")
    text = console.export_text()
    assert "vllm-0.9.2+volta.5-py3-none-any.whl" in text
    assert "vllm_volta-0.9.2.5-py3-none-any.whl" in text
    assert "meta: requires vllm==0.9.2+volta.5" in text and text.count(" new ") == 2
    refuse_conflicts(plan)  # nothing on the index: no refusal


def test_identical_file_on_the_index_counts_as_done(tmp_path, monkeypatch):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.5")
    plan = prepare(tmp_path)
    sha = plan.uploads[0].artifact.sha256
    on_index = [IndexFile(wheel.name, "u", sha, plan.uploads[0].artifact.version)]
    monkeypatch.setattr(publish, "list_project_files", _listing(on_index))
    uploaded = []

    def fake_upload(config, path, progress):
        uploaded.append(path)
        a = next(u.artifact for u in plan.uploads if u.artifact.path == path)
        on_index.append(IndexFile(path.name, "u", a.sha256, a.version))

    monkeypatch.setattr(publish, "_twine_upload", fake_upload)
    check_index(plan, CONFIG)
    assert [u.status for u in plan.uploads] == ["on the index, identical (done)", "new"]
    publish.upload_plan(plan, CONFIG, Console(quiet=True))
    assert [p.name for p in uploaded] == [plan.uploads[1].artifact.filename]  # the meta wheel only


def test_different_bytes_under_the_same_file_name_are_refused(tmp_path, monkeypatch):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.5")
    plan = prepare(tmp_path)
    on_index = [IndexFile(wheel.name, "u", "e" * 64, plan.uploads[0].artifact.version)]
    monkeypatch.setattr(publish, "list_project_files", _listing(on_index))
    uploaded = []
    monkeypatch.setattr(publish, "_twine_upload", lambda c, p, progress: uploaded.append(p))
    check_index(plan, CONFIG)
    assert plan.uploads[0].status == "exists, different bytes"
    with pytest.raises(PublishRefused, match=r"vllm 0.9.2\+volta.5 is already on the index with different bytes"):
        publish.upload_plan(plan, CONFIG, Console(file=None))
    assert uploaded == []


def test_a_publish_cut_short_after_the_vllm_wheel_is_finished_by_a_rerun(tmp_path, monkeypatch):
    """Issue 13, case 6: the vllm wheel went up, the meta wheel did not; every rerun refused."""
    vllm_wheel(tmp_path, "0.9.2+volta.5")
    served: list[IndexFile] = []
    calls = []

    def upload_then_die(config, path, progress):
        calls.append(path.name)
        plan_now = prepare(tmp_path)
        a = next(u.artifact for u in plan_now.uploads if u.artifact.filename == path.name)
        served.append(IndexFile(path.name, "u", a.sha256, a.version))
        if len(calls) == 1:
            raise requests.ConnectionError("connection lost")  # the kill, after the first upload

    monkeypatch.setattr(publish, "_twine_upload", upload_then_die)
    monkeypatch.setattr(publish, "list_project_files", _listing(served))
    plan = prepare(tmp_path)
    check_index(plan, CONFIG)
    with pytest.raises(IndexProblem, match="run the publish again"):
        publish.upload_plan(plan, CONFIG, Console(quiet=True))
    again = prepare(tmp_path)  # the rerun rebuilds the meta wheel: the same bytes
    check_index(again, CONFIG)
    assert [u.status for u in again.uploads] == ["on the index, identical (done)", "new"]
    assert publish.upload_plan(again, CONFIG, Console(quiet=True)) == []
    assert [f.filename.split("-")[0] for f in served] == ["vllm", "vllm_volta"]
    third = prepare(tmp_path)  # and once more: all done, nothing uploaded
    check_index(third, CONFIG)
    assert third.pending == [] and publish.upload_plan(third, CONFIG, Console(quiet=True)) == []
    assert len(calls) == 2


def test_an_index_without_hashes_is_compared_by_its_bytes(tmp_path, monkeypatch):
    wheel = vllm_wheel(tmp_path, "0.9.2+volta.5")
    plan = prepare(tmp_path)

    class Response:
        def __init__(self, data):
            self.data = data

        def raise_for_status(self):
            pass

        def iter_content(self, n):
            yield self.data

    class Session:
        def __init__(self, data):
            self.data = data

        def get(self, url, **kw):
            return Response(self.data)

    on_index = [IndexFile(wheel.name, "u", None, plan.uploads[0].artifact.version)]
    monkeypatch.setattr(publish, "list_project_files", _listing(on_index))
    check_index(plan, CONFIG, session=Session(wheel.read_bytes()))
    assert plan.uploads[0].done
    check_index(plan, CONFIG, session=Session(b"other bytes"))
    assert plan.uploads[0].conflict


def test_other_file_of_same_version_counts(tmp_path, monkeypatch):
    vllm_wheel(tmp_path, "0.9.2+volta.5")
    plan = prepare(tmp_path)
    other = IndexFile("vllm-0.9.2+volta.5-cp38-abi3-manylinux1_x86_64.whl", "u", "0" * 64,
                      plan.uploads[0].artifact.version)
    monkeypatch.setattr(publish, "list_project_files", _listing([other]))
    check_index(plan, CONFIG)
    assert plan.uploads[0].status == "exists (other files of this version)"
    with pytest.raises(PublishRefused, match="tag the next series release"):
        refuse_conflicts(plan)


def test_upload_order_and_hash_verification(tmp_path, monkeypatch):
    vllm_wheel(tmp_path, "0.9.2+volta.5")
    plan = prepare(tmp_path)
    served = []

    def fake_upload(config, path, progress):
        artifact = next(u.artifact for u in plan.uploads if u.artifact.path == path)
        served.append(IndexFile(path.name, "u", artifact.sha256, artifact.version))

    monkeypatch.setattr(publish, "_twine_upload", fake_upload)
    monkeypatch.setattr(publish, "list_project_files", _listing(served))
    check_index(plan, CONFIG)
    assert publish.upload_plan(plan, CONFIG, Console(quiet=True)) == []
    assert [f.filename.split("-")[0] for f in served] == ["vllm", "vllm_volta"]

    served[0] = IndexFile(served[0].filename, "u", "f" * 64, served[0].version)
    with pytest.raises(IndexProblem, match="Do not install it"):
        publish.verify_published(plan, CONFIG)
    served[:] = [IndexFile(f.filename, "u", None, f.version) for f in served]
    notes = publish.verify_published(plan, CONFIG)
    assert len(notes) == 2 and "publishes no sha256" in notes[0]


class _Killed(BaseException):
    """Stands for a kill of the publish process."""


def test_a_publish_killed_at_every_index_call_is_finished_by_a_rerun(tmp_path, monkeypatch):
    """Fault injection: the Nth index call (listing or upload) dies, then a plain rerun."""
    vllm_wheel(tmp_path, "0.9.2+volta.5")
    n = 0
    while True:
        n += 1
        served: list[IndexFile] = []
        uploads: list[str] = []
        calls = [0]

        def tick():
            calls[0] += 1
            if calls[0] == n:
                raise _Killed()

        def fake_list(config, project, session=None):
            tick()
            return [f for f in served if f.filename.startswith(project.replace("-", "_") + "-")]

        def fake_upload(config, path, progress):
            tick()
            a = next(u.artifact for u in prepare(tmp_path).uploads if u.artifact.filename == path.name)
            uploads.append(path.name)
            served.append(IndexFile(path.name, "u", a.sha256, a.version))

        monkeypatch.setattr(publish, "list_project_files", fake_list)
        monkeypatch.setattr(publish, "_twine_upload", fake_upload)

        def run():
            plan = prepare(tmp_path)
            check_index(plan, CONFIG)
            publish.upload_plan(plan, CONFIG, Console(quiet=True))

        try:
            run()
            break  # n is past the last call
        except _Killed:
            pass
        calls[0] = -10**9  # no more faults: the rerun
        run()
        assert sorted(f.filename.split("-")[0] for f in served) == ["vllm", "vllm_volta"]
        assert len(uploads) == len(set(uploads)) == 2  # each uploaded once, none refused
    assert n > 5
