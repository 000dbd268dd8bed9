"""The security defaults, each checked: loopback only, tokens required and rotatable, registration off,
allowed_urls limited, and no request text reaching eval, attribute walks or a shell."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import psutil
import pytest
import requests

from scripts.local_torchserve import processes_in
from tests.images import jpeg

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "config.properties").read_text()


def setting(key: str) -> str:
    m = re.search(rf"^{key}=(.*)$", CONFIG, re.MULTILINE)
    assert m, f"config.properties has no {key}"
    return m.group(1).strip()


def test_shipped_config_binds_every_address_to_loopback():
    for key in ("inference_address", "management_address", "metrics_address"):
        assert setting(key).startswith("http://127.0.0.1:"), key
    for key in ("grpc_inference_address", "grpc_management_address"):
        assert setting(key) == "127.0.0.1", key


def test_shipped_config_keeps_tokens_on_and_registration_off():
    assert setting("disable_token_authorization") == "false"
    assert setting("enable_model_api") == "false"
    assert setting("install_py_dep_per_model") == "false"
    assert setting("enable_envvars_config") == "false"


def test_allowed_urls_admit_only_local_archives():
    pattern = re.compile(setting("allowed_urls").replace("\\\\", "\\"))
    assert pattern.fullmatch("file:///srv/app/model_store/alexnet_viz.mar")
    refused = [
        "https://example.com/model_store/x.mar",
        "http://169.254.169.254/latest/meta-data",
        "file:///srv/app/model_store/../../etc/passwd",
        "file:///etc/model_store/x.mar/../../shadow",
    ]
    for url in refused:
        assert not pattern.fullmatch(url), url


@pytest.mark.integration
def test_every_listening_socket_is_on_loopback(server):
    listening = []
    for proc in processes_in(server.workdir):
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        listening += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening, "found no listening socket of the test TorchServe"

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # Java shows ::ffff:127.0.0.1

    assert all(loopback(addr.ip) for addr in listening), listening


@pytest.mark.integration
def test_management_and_metrics_need_the_token_too(server):
    assert requests.get(f"{server.management}/models", timeout=30).status_code in (400, 401)
    ok = requests.get(f"{server.management}/models", timeout=30,
                      headers={"Authorization": f"Bearer {server.management_key}"})  # fmt: skip
    assert ok.status_code == 200
    wrong = requests.get(f"{server.management}/models", headers=server.auth(), timeout=30)  # inference key
    assert wrong.status_code in (400, 401)


@pytest.mark.integration
def test_inference_key_can_be_rotated(server):
    keys = json.loads((server.workdir / "key_file.json").read_text())
    api = keys["API"]["key"]
    old = server.key
    r = requests.get(f"{server.management}/token", params={"type": "inference"}, timeout=30,
                     headers={"Authorization": f"Bearer {api}"})  # fmt: skip
    assert r.status_code == 200, r.text
    new = json.loads((server.workdir / "key_file.json").read_text())["inference"]["key"]
    assert new != old
    server.key = new  # the other tests go on with the fresh key
    assert server.post("alexnet_viz", data=jpeg(), headers={"Content-Type": "image/jpeg"}).status_code == 200
    stale = requests.post(f"{server.url}/predictions/alexnet_viz", data=jpeg(), timeout=30,
                          headers={"Authorization": f"Bearer {old}", "Content-Type": "image/jpeg"})  # fmt: skip
    assert stale.status_code in (400, 401)


DANGEROUS = [r"(?<![.\w])eval\(", r"(?<![.\w])exec\(", r"\bgetattr\(", r"__import__", r"\bsubprocess\b", r"os\.system",
             r"os\.popen", r"pickle\.load", r"weights_only\s*=\s*False", r"shell\s*=\s*True"]  # fmt: skip


def test_no_request_text_can_reach_eval_getattr_or_a_shell():
    """The code that runs in the worker has none of these, so request text cannot reach them. Layer names are looked
    up in a dict of named_modules(); the one file that runs code, model_from_file, loads the archive's model.py."""
    found = []
    for path in sorted((ROOT / "handlers").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            found += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for p in DANGEROUS if re.search(p, code)]
    assert not found, "\n".join(found)
