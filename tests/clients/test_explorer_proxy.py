"""clients/explorer.py without TorchServe: its proxy against a fake TorchServe on loopback. The key is added on the
way to TorchServe and never reaches the browser; model names are checked; bodies are capped; only the page may
use the API; the page is its own files, nothing from elsewhere."""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from clients import explorer

KEY, MKEY = "inf-SECRET-4f2a", "mgmt-SECRET-9c1b"
PAGE = {"X-Explorer": "1"}


class FakeTorchServe(BaseHTTPRequestHandler):
    """Inference and management API in one: records every request; answers as ``reply`` says."""

    seen: list[dict] = []
    reply: dict = {}

    def log_message(self, *args) -> None:
        pass

    def _record(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        return body

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Internal", "torchserve-only")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        if self.headers.get("Authorization") != f"Bearer {MKEY}":
            return self._send(401, b'{"code": 401, "message": "Token Authorization failed"}', "application/json")
        if "next_page_token" in self.path:
            return self._send(200, json.dumps({"models": [{"modelName": "alexnet_viz"}]}).encode(), "application/json")
        page = {"models": [{"modelName": "shapes_viz", "modelUrl": "shapes_viz.mar"}], "nextPageToken": "1"}
        self._send(200, json.dumps(page).encode(), "application/json")

    def do_POST(self) -> None:  # noqa: N802
        body = self._record()
        status, out, ctype, extra = self.reply.get("answer") or (200, b'{"predictions": []}', "application/json", {})
        if self.reply.get("echo_auth"):  # a server that repeats the header it got
            out = json.dumps({"message": f"got {self.headers.get('Authorization')}", "size": len(body)}).encode()
        self._send(status, out, ctype, extra)


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def torchserve() -> Iterator[tuple[str, type[FakeTorchServe]]]:
    handler = type("Fake", (FakeTorchServe,), {"seen": [], "reply": {}})
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url, handler


@pytest.fixture
def keys(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("VIZ_TOKEN", raising=False)
    monkeypatch.delenv("VIZ_MANAGEMENT_TOKEN", raising=False)
    path = tmp_path / "key_file.json"
    path.write_text(json.dumps({"management": {"key": MKEY}, "inference": {"key": KEY}, "API": {"key": "api-x"}}))
    return path


@pytest.fixture
def explore(torchserve, keys) -> Iterator[tuple[str, type[FakeTorchServe]]]:
    url, fake = torchserve
    config = explorer.Config(url, url, keys, max_body=1000)
    with serving(explorer.make_server(config)) as page:
        yield page, fake


def raw_request(base: str, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
    """One request with exactly these headers (a Content-Length that lies, a foreign Host)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def no_key_in(r: requests.Response) -> None:
    everything = r.content + json.dumps(dict(r.headers)).encode()
    assert KEY.encode() not in everything and MKEY.encode() not in everything


def test_a_prediction_is_forwarded_with_the_key_added_there_and_answered_without_it(explore):
    page, fake = explore
    r = requests.post(f"{page}/api/predictions/shapes_viz", files={"data": ("x.png", b"\x89PNG..")},
                      data={"mode": "featuremaps"}, headers=PAGE, timeout=30)  # fmt: skip
    assert r.status_code == 200 and r.json() == {"predictions": []}
    [got] = fake.seen
    assert got["path"] == "/predictions/shapes_viz" and got["headers"]["Authorization"] == f"Bearer {KEY}"
    assert got["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="mode"' in got["body"] and b"\x89PNG.." in got["body"]  # the body as the browser sent it
    assert "X-Internal" not in r.headers and "default-src 'none'" in r.headers["Content-Security-Policy"]
    no_key_in(r)


def test_a_key_the_server_repeats_is_scrubbed_and_refusals_pass_with_their_message(explore):
    page, fake = explore
    fake.reply["echo_auth"] = True
    r = requests.post(f"{page}/api/predictions/shapes_viz", data={"job": "abc"}, headers=PAGE, timeout=30)
    assert r.json()["message"] == "got Bearer [key]"
    no_key_in(r)
    fake.reply.clear()
    refusal = json.dumps({"code": 400, "type": "InvalidOption", "message": "channel 999 is not a channel"}).encode()
    fake.reply["answer"] = (400, refusal, "application/json", {})
    r = requests.post(f"{page}/api/predictions/shapes_viz", data={"mode": "deconv"}, headers=PAGE, timeout=30)
    assert r.status_code == 400 and r.json()["message"] == "channel 999 is not a channel"
    fake.reply["answer"] = (429, b'{"code": 429, "message": "busy"}', "application/json", {"Retry-After": "3"})
    r = requests.post(f"{page}/api/predictions/shapes_viz", data={"mode": "actmax"}, headers=PAGE, timeout=30)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    fake.reply["answer"] = (202, b'{"job": "j1", "state": "queued"}', "application/json", {})
    r = requests.post(f"{page}/api/predictions/shapes_viz", data={"mode": "actmax"}, headers=PAGE, timeout=30)
    assert r.status_code == 202 and r.json()["job"] == "j1"


#: TorchServe 0.12's answer to a missing, wrong or expired key, from its front end (TokenAuthorizationHandler).
KEY_REFUSED = json.dumps({"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed. Token "
                          "either incorrect, expired, or not provided correctly"}).encode()  # fmt: skip


def test_a_refused_key_is_a_401_that_says_which_key_and_where_it_is(explore, keys):
    page, fake = explore
    keys.write_text(json.dumps({"inference": {"key": KEY, "expiration time": "2020-01-01T00:00:00.5Z"},
                                "management": {"key": MKEY}, "API": {"key": "api-x"}}))  # fmt: skip
    fake.reply["answer"] = (400, KEY_REFUSED, "application/json", {})
    r = requests.post(f"{page}/api/predictions/shapes_viz", data={"mode": "layers"}, headers=PAGE, timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="TorchServe"'
    message = r.json()["message"]
    assert f"the inference key of {keys} expired at 2020-01-01 00:00:00 UTC" in message
    assert '-H "Authorization: Bearer $api" \'http' in message and "/token?type=inference'" in message
    assert "api-x" not in message
    no_key_in(r)


def test_the_model_list_comes_from_the_management_api_with_its_key_every_page(explore):
    page, fake = explore
    r = requests.get(f"{page}/api/models", headers=PAGE, timeout=30)
    assert r.status_code == 200 and r.json()["models"] == ["alexnet_viz", "shapes_viz"]
    assert [s["headers"]["Authorization"] for s in fake.seen] == [f"Bearer {MKEY}"] * 2
    no_key_in(r)


def test_a_rotated_key_is_read_afresh_and_the_environment_wins(explore, keys, monkeypatch):
    page, fake = explore
    keys.write_text(json.dumps({"management": {"key": MKEY}, "inference": {"key": KEY + "-new"}}))
    requests.post(f"{page}/api/predictions/shapes_viz", data={"mode": "layers"}, headers=PAGE, timeout=30)
    monkeypatch.setenv("VIZ_TOKEN", "from-env")
    requests.post(f"{page}/api/predictions/shapes_viz", data={"mode": "layers"}, headers=PAGE, timeout=30)
    assert [s["headers"]["Authorization"] for s in fake.seen] == [f"Bearer {KEY}-new", "Bearer from-env"]


@pytest.mark.parametrize("path", ["/api/predictions/../management/models", "/api/predictions/a/b",
                                  "/api/predictions/%2e%2e", "/api/predictions/..", "/api/predictions/",
                                  "/api/predictions/x%2Fy", "/api/predictions/.hidden",
                                  "/api/predictions/a?b=http://example.com/"])  # fmt: skip
def test_model_names_are_checked_and_nothing_else_is_forwarded(explore, path):
    page, fake = explore
    status, _, body = raw_request(page, "POST", path, {**PAGE, "Content-Length": "2"}, b"{}")
    assert status == 400, body
    assert re.match("not a model name|no query string", json.loads(body)["message"]) and fake.seen == []


def test_the_body_is_capped_before_it_is_read_and_needs_a_length(explore):
    page, fake = explore
    status, _, body = raw_request(page, "POST", "/api/predictions/shapes_viz", {**PAGE, "Content-Length": "5000000"})
    assert status == 413 and "at most 1,000" in json.loads(body)["message"]
    status, _, body = raw_request(page, "POST", "/api/predictions/shapes_viz", {**PAGE, "Content-Length": "1001"},
                                  b"x" * 1001)  # fmt: skip
    assert status == 413
    status, _, body = raw_request(page, "POST", "/api/predictions/shapes_viz",
                                  {**PAGE, "Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n")  # fmt: skip
    assert status == 411
    ok = requests.post(f"{page}/api/predictions/shapes_viz", data=b"x" * 1000, headers=PAGE, timeout=30)
    assert ok.status_code == 200 and len(fake.seen) == 1 and fake.seen[0]["body"] == b"x" * 1000


def test_only_the_page_may_use_the_api(explore):
    page, fake = explore
    assert requests.post(f"{page}/api/predictions/shapes_viz", data=b"{}", timeout=30).status_code == 403
    assert requests.get(f"{page}/api/models", timeout=30).status_code == 403  # a cross-site form or image
    other = {**PAGE, "Origin": "http://evil.example"}
    assert requests.post(f"{page}/api/predictions/shapes_viz", data=b"{}", headers=other, timeout=30).status_code == 403
    rebound = {**PAGE, "Host": "evil.example:8090", "Content-Length": "2"}  # a name made to point at 127.0.0.1
    assert raw_request(page, "POST", "/api/predictions/shapes_viz", rebound, b"{}")[0] == 403
    assert raw_request(page, "GET", "/", {"Host": "evil.example"})[0] == 403
    assert fake.seen == []
    same = {**PAGE, "Origin": page}
    assert requests.post(f"{page}/api/predictions/shapes_viz", data=b"{}", headers=same, timeout=30).status_code == 200


def test_an_unreachable_server_is_a_plain_502(keys):
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), FakeTorchServe)) as gone:
        pass  # a port nobody listens on any more
    with serving(explorer.make_server(explorer.Config(gone, gone, keys))) as page:
        r = requests.post(f"{page}/api/predictions/shapes_viz", data=b"{}", headers=PAGE, timeout=30)
        assert r.status_code == 502 and "cannot reach TorchServe" in r.json()["message"]
        r = requests.get(f"{page}/api/models", headers=PAGE, timeout=30)
        assert r.status_code == 502


def test_the_page_is_its_own_files_and_carries_no_key(explore):
    page, _ = explore
    r = requests.get(f"{page}/", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    for name in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
        s = requests.get(f"{page}{name}", timeout=30)
        assert s.status_code == 200, name
        no_key_in(s)
    no_key_in(r)
    for path in ("/static/../explorer.py", "/static/%2e%2e/explorer.py", "/static/explorer.py", "/key_file.json",
                 "/static/.hidden.js", "/static/EXPLORER.JS"):  # fmt: skip
        assert requests.get(f"{page}{path}", timeout=30).status_code == 404, path
    # Nothing fetched from another origin: no absolute URL in the page's files.
    for f in (Path(explorer.__file__).parent / "explorer").iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", f.read_text(), re.IGNORECASE), f.name


def test_the_command_line_refuses_bad_servers_and_model_names(capsys):
    with pytest.raises(SystemExit):
        explorer.main(["--server", "file:///etc/passwd"])
    with pytest.raises(SystemExit):
        explorer.main(["--models", "../x"])
    assert "not a model name" in capsys.readouterr().err
