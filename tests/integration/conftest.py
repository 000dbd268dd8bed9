"""A real TorchServe on loopback, started once for the integration tests and always stopped after them."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
import torch

from cnnviz import random_state_dict

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT = 240


@dataclass
class Server:
    url: str
    management: str
    metrics: str
    key: str
    management_key: str
    alexnet_weights: Path
    workdir: Path

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, model: str, **kw) -> requests.Response:
        headers = {**self.auth(), **kw.pop("headers", {})}
        return requests.post(f"{self.url}/predictions/{model}", headers=headers, timeout=120, **kw)

    def worker_pids(self, model: str) -> list[int]:
        r = requests.get(
            f"{self.management}/models/{model}",
            headers={"Authorization": f"Bearer {self.management_key}"},
            timeout=10,
        )
        r.raise_for_status()
        return sorted(w["pid"] for w in r.json()[0]["workers"])


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_config(store: Path, ports: list[int]) -> str:
    """config.properties as shipped, with this run's ports and model store."""
    text = (ROOT / "config.properties").read_text()
    inf, mgmt, met, grpc_inf, grpc_mgmt = ports
    for key, value in {
        "inference_address": f"http://127.0.0.1:{inf}",
        "management_address": f"http://127.0.0.1:{mgmt}",
        "metrics_address": f"http://127.0.0.1:{met}",
        "grpc_inference_port": str(grpc_inf),
        "grpc_management_port": str(grpc_mgmt),
        "model_store": str(store),
    }.items():
        text, n = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert n == 1, f"config.properties has no {key}"
    return text


def torchserve_processes(workdir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(workdir) in part for part in p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    work = tmp_path_factory.mktemp("torchserve")
    store = work / "model_store"
    weights = work / "alexnet_seeded.pt"
    torch.save(random_state_dict("alexnet", seed=7), weights)
    for args in (["--weights", str(weights), "alexnet"], ["--random-weights", "resnet18"]):
        subprocess.run([str(ROOT / "archive.sh"), "--out", str(store), *args], check=True, timeout=600)

    ports = free_ports(5)
    (work / "config.properties").write_text(test_config(store, ports))
    env = {**os.environ, "TMPDIR": str(work), "PATH": f"{BIN}:{os.environ['PATH']}"}  # TMPDIR: own pid file
    start = [str(BIN / "torchserve"), "--start", "--ncs", "--ts-config", str(work / "config.properties"),
             "--model-store", str(store), "--models", "alexnet_viz.mar", "resnet18_viz.mar"]  # fmt: skip
    subprocess.run(start, cwd=work, env=env, check=True, timeout=60, stdout=subprocess.DEVNULL)
    try:
        srv = None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                keys = json.loads((work / "key_file.json").read_text())
                srv = Server(
                    url=f"http://127.0.0.1:{ports[0]}",
                    management=f"http://127.0.0.1:{ports[1]}",
                    metrics=f"http://127.0.0.1:{ports[2]}",
                    key=keys["inference"]["key"],
                    management_key=keys["management"]["key"],
                    alexnet_weights=weights,
                    workdir=work,
                )
                if all(srv.worker_pids(m) for m in ("alexnet_viz", "resnet18_viz")) and all(
                    srv.post(m, data=b"", headers={"Content-Type": "image/jpeg"}).status_code == 400
                    for m in ("alexnet_viz", "resnet18_viz")
                ):
                    break
            except (OSError, ValueError, KeyError, requests.RequestException):
                continue
        else:
            log = work / "logs" / "model_log.log"
            tail = log.read_text()[-3000:] if log.exists() else "(no model log)"
            pytest.fail(f"TorchServe not ready after {START_TIMEOUT} s; model log:\n{tail}")
        yield srv
    finally:
        subprocess.run([str(BIN / "torchserve"), "--stop"], cwd=work, env=env, timeout=60, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while torchserve_processes(work) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = torchserve_processes(work)
        for p in left:
            p.kill()
        assert not left, f"TorchServe still running after --stop: {[p.pid for p in left]}"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", ports[0])) != 0, "inference port still open after --stop"
        shutil.rmtree(store, ignore_errors=True)  # the archives are large
