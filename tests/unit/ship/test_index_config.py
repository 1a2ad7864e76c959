import pytest
import requests

from vllm_volta.ship import index
from vllm_volta.ship.index import IndexProblem, list_project_files, load_config, redact

BASE = {"VLLM_VOLTA_INDEX_URL": "https://pkgs.example.invalid/volta"}


def test_env_config_derives_simple_url():
    config = load_config({**BASE, "VLLM_VOLTA_INDEX_USER": "ci", "VLLM_VOLTA_INDEX_TOKEN": "t0k"})
    assert config.upload_url == "https://pkgs.example.invalid/volta/"
    assert config.simple_url == "https://pkgs.example.invalid/volta/simple/"
    assert (config.username, config.password, config.token_source) == ("ci", "t0k", "environment")
    assert "t0k" not in repr(config) and "t0k" not in config.describe()


def test_explicit_simple_url_for_devpi():
    config = load_config({**BASE, "VLLM_VOLTA_INDEX_SIMPLE_URL": "https://d/u/i/+simple",
                          "VLLM_VOLTA_INDEX_TOKEN": "x"})
    assert config.simple_url == "https://d/u/i/+simple/" and config.username == "__token__"


def test_token_from_keyring(monkeypatch):
    seen = {}

    def fake(service, user):
        seen["args"] = (service, user)
        return "from-keyring"

    monkeypatch.setattr(index, "_keyring_password", fake)
    config = load_config({**BASE, "VLLM_VOLTA_INDEX_USER": "me"})
    assert config.password == "from-keyring" and config.token_source == "keyring"
    assert seen["args"] == ("https://pkgs.example.invalid/volta/", "me")


def test_missing_url_and_token(monkeypatch):
    monkeypatch.setattr(index, "_keyring_password", lambda s, u: None)
    with pytest.raises(IndexProblem, match="VLLM_VOLTA_INDEX_URL"):
        load_config({})
    with pytest.raises(IndexProblem, match="VLLM_VOLTA_INDEX_TOKEN"):
        load_config(BASE)
    assert load_config(BASE, need_token=False).password is None


def test_redact():
    assert redact("https://u:p@h.example:8443/x/") == "https://***@h.example:8443/x/"
    assert redact("https://h.example/x/") == "https://h.example/x/"


class FakeSession:
    def __init__(self, status, body="", content_type="text/html", headers=None):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}
        self.calls = []

    def get(self, url, **kwargs):
        self.calls.append((url, kwargs))
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body.encode()
        response.headers.update({"Content-Type": self.content_type, **self.headers})
        response.url = url
        response.reason = "X"
        return response


CONFIG = load_config({**BASE, "VLLM_VOLTA_INDEX_TOKEN": "t"})
SHA = "ab" * 32


def test_html_page():
    html = (f'<html><body><a href="../../packages/vllm-0.9.2%2Bvolta.1-cp38-abi3-manylinux1_x86_64.whl#sha256={SHA}">'
            'vllm-0.9.2+volta.1-cp38-abi3-manylinux1_x86_64.whl</a>'
            '<a href="/p/vllm-0.9.2.tar.gz">vllm-0.9.2.tar.gz</a></body></html>')
    session = FakeSession(200, html)
    files = list_project_files(CONFIG, "vLLM", session=session)
    assert session.calls[0][0] == "https://pkgs.example.invalid/volta/simple/vllm/"
    assert session.calls[0][1]["auth"] == ("__token__", "t")
    assert [(f.filename, f.sha256, str(f.version)) for f in files] == [
        ("vllm-0.9.2+volta.1-cp38-abi3-manylinux1_x86_64.whl", SHA, "0.9.2+volta.1"),
        ("vllm-0.9.2.tar.gz", None, "0.9.2"),
    ]


def test_json_page():
    body = ('{"meta": {"api-version": "1.0"}, "name": "vllm-volta", "files": [{"filename": '
            f'"vllm_volta-0.9.2.1-py3-none-any.whl", "url": "f/v.whl", "hashes": {{"sha256": "{SHA}"}}}}]}}')
    files = list_project_files(CONFIG, "vllm-volta",
                               session=FakeSession(200, body, "application/vnd.pypi.simple.v1+json"))
    assert files[0].sha256 == SHA and str(files[0].version) == "0.9.2.1"


@pytest.mark.parametrize("status", [404, 302, 303])
def test_absent_project(status):
    assert list_project_files(CONFIG, "vllm", session=FakeSession(status, headers={"Location": "https://x/"})) == []


def test_auth_refused():
    with pytest.raises(IndexProblem, match="credentials cannot read"):
        list_project_files(CONFIG, "vllm", session=FakeSession(401))
