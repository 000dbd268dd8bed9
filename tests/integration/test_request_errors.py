"""What only a real TorchServe shows of a request gone wrong, sent as curl sends it: its one 400 for every key
problem (which the clients turn into a pointer to key_file.json, the explorer into a 401), a query string dropped
on /predictions but passed on /models/{model}/invoke, and a JSON body sent without its Content-Type."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading

import pytest
import requests

from clients import explorer
from scripts.local_torchserve import ROOT
from tests.images import shape_png

pytestmark = pytest.mark.integration
#: what curl -d sends without -H 'Content-Type: ...'
CURL_D = {"Content-Type": "application/x-www-form-urlencoded"}


def test_every_key_problem_is_torchserves_400_and_the_clients_say_which(server, tmp_path):
    for headers in ({}, {"Authorization": "Bearer wrong"}):  # TorchServe answers before any handler
        r = requests.post(f"{server.url}/predictions/shapes_viz", data={"mode": "layers"}, headers=headers, timeout=30)
        assert r.status_code == 400 and r.json()["type"] == "InvalidKeyException", r.text
    keys = server.workdir / "key_file.json"
    cmd = [sys.executable, str(ROOT / "clients" / "viz_client.py"), "--url", server.url, "--model", "shapes_viz",
           "--mode", "layers", "--key-file", str(keys), "--token", "a-key-of-yesterday"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and f"the key sent is not the inference key of {keys}" in run.stderr, run.stderr
    # the explorer answers the same refusal as a 401 saying which key, and never shows it
    stale = tmp_path / "key_file.json"
    stale.write_text(json.dumps({"inference": {"key": "old", "expiration time": "2020-01-01T00:00:00Z"},
                                 "management": {"key": server.management_key}}))  # fmt: skip
    page = explorer.make_server(explorer.Config(server.url, server.management, stale))
    thread = threading.Thread(target=page.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = page.server_address[:2]
        r = requests.post(f"http://{host}:{port}/api/predictions/shapes_viz", data={"mode": "layers"},
                          headers={"X-Explorer": "1"}, timeout=60)  # fmt: skip
    finally:
        page.shutdown()
        page.server_close()
        thread.join(10)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers, r.text
    assert f"the inference key of {stale} expired at 2020-01-01 00:00:00 UTC" in r.json()["message"]


def test_a_query_string_is_dropped_on_predictions_and_read_on_invoke(server):
    png, _ = shape_png(0)
    image = {**server.auth(), "Content-Type": "image/png"}
    dropped = requests.post(f"{server.url}/predictions/shapes_viz?mode=layers", data=png, headers=image, timeout=60)
    assert dropped.status_code == 200 and "layers" not in dropped.json()  # TorchServe never passed it on
    read = requests.post(f"{server.url}/models/shapes_viz/invoke?mode=layers&topk=2", data=png, headers=image,
                         timeout=60)  # fmt: skip
    assert read.status_code == 200, read.text[:300]
    assert read.json()["layers"] and len(read.json()["predictions"]) == 2
    twice = requests.post(f"{server.url}/models/shapes_viz/invoke?mode=layers", json={"mode": "classify"},
                          headers=server.auth(), timeout=60)  # fmt: skip
    assert twice.status_code == 400 and "option 'mode' came twice: in the query string and in the body" in twice.text


def test_a_json_body_without_its_content_type_is_refused_with_the_header_to_add(server):
    png, _ = shape_png(0)
    headers = {**server.auth(), **CURL_D}
    with_eq = json.dumps({"data": base64.b64encode(png).decode(), "layers": "a=b"})  # cut apart at '='
    for body in ('{"mode": "layers"}', with_eq):  # no '=': TorchServe's form decoder finds no field at all
        r = requests.post(f"{server.url}/predictions/shapes_viz", data=body, headers=headers, timeout=60)
        assert r.status_code == 400 and r.json()["type"] == "InvalidInput", r.text[:300]
        assert "-H 'Content-Type: application/json'" in r.json()["message"]
    r = requests.post(f"{server.url}/predictions/shapes_viz", data="mode=layers", headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["layers"]  # a real form (curl -d 'mode=layers') is a form
    r = requests.post(f"{server.url}/predictions/shapes_viz", files={"file": ("s.png", png)}, headers=server.auth(),
                      timeout=60)  # fmt: skip
    assert r.status_code == 400 and r.json()["message"].startswith("unknown option 'file'; did you mean 'data'?")
