"""Build-side settings that must not clash: one CUDA provisioning per cache, and the index the upstream wheel comes from."""
import json
import threading
import time

from vllm_volta.build import provision


def test_a_second_provision_waits_and_reuses_the_first(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_VOLTA_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache"
    made = []

    def fake_locked(cache_arg, progress):
        made.append(threading.get_ident())
        time.sleep(0.5)
        tk = provision.toolkit_dir(cache_arg)
        (tk / "bin").mkdir(parents=True)
        (tk / "bin" / "nvcc").write_text("")
        provision.manifest_path(cache_arg).write_text(json.dumps({"recipe": provision.RECIPE}))
        return tk

    monkeypatch.setattr(provision, "_provision_locked", fake_locked)
    results = []
    threads = [threading.Thread(target=lambda: results.append(provision.provision(cache, lambda _: None)))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(10)
    assert len(made) == 1, "the toolkit was provisioned twice"
    assert results == [provision.toolkit_dir(cache)] * 2


def test_upstream_wheel_is_read_from_the_sdist_index_not_the_upload_index(monkeypatch):
    from vllm_volta.build import upstream_wheel

    seen = {}

    class FakeClient:
        def __init__(self, endpoint):
            seen["endpoint"] = endpoint

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get_project_page(self, name):
            raise RuntimeError("stop here")

    import pypi_simple
    monkeypatch.setattr(pypi_simple, "PyPISimple", FakeClient)
    monkeypatch.setenv("VLLM_VOLTA_INDEX_URL", "https://upload.example.invalid/")
    monkeypatch.delenv("VLLM_VOLTA_SDIST_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example.invalid/simple/")
    try:
        upstream_wheel.url_from_index()
    except RuntimeError:
        pass
    assert seen["endpoint"] == "https://mirror.example.invalid/simple/"
