"""Deployment files, checked without a Docker engine or a cluster; the images themselves: test_docker.py."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from scripts.local_torchserve import derived_config, free_ports, stop_torchserve

ROOT = Path(__file__).resolve().parents[2]


COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cpu.yml"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_publish_on_loopback_only_and_check_health(name):
    [(service, spec)] = yaml.safe_load((ROOT / name).read_text())["services"].items()
    kind = "cpu" if "cpu" in name else "gpu"
    assert spec["build"]["dockerfile"] == f"docker/Dockerfile.{kind}" and spec["image"] == f"cnn-viz-serve:{kind}"
    assert all(port.startswith("127.0.0.1:") for port in spec["ports"])
    assert spec["healthcheck"]["test"] == ["CMD", "docker/healthcheck.sh"]
    assert any(v.endswith("/home/viz/.cache/torch:ro") for v in spec["volumes"])  # weights from a mounted cache
    devices = spec.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    if kind == "gpu":
        [device] = devices
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    else:
        assert devices is None


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_run_as_a_user_keep_tokens_and_use_the_readme_scripts(name):
    text = (ROOT / "docker" / name).read_text()
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and 'ENTRYPOINT ["docker/entrypoint.sh"]' in text
    assert "./scripts/setup.sh" in text and "./archive.sh" in text
    assert "disable-token-auth" not in text and "disable_token_authorization=true" not in text


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_take_the_base_as_an_argument_and_pip_settings_only_as_build_secrets(name):
    lines = [line for line in (ROOT / "docker" / name).read_text().splitlines() if not line.startswith("#")]
    assert lines[0].startswith("ARG BASE_IMAGE=") and lines[1] == "FROM ${BASE_IMAGE}"
    text = "\n".join(lines)
    assert "--mount=type=secret,id=pip_cert" in text and "PIP_CERT=/run/secrets/pip_cert" in text
    assert not re.search(r"^(COPY|ADD)\b.*(\.crt|\.pem|pip\.conf|secret)", text, re.MULTILINE | re.IGNORECASE)
    assert not re.search(r"^(ENV|ARG)\b.*(PIP_CERT|PIP_INDEX|PIP_EXTRA|PIP_CONFIG)", text, re.MULTILINE)


def test_gpu_dockerfile_is_the_cpu_one_without_the_torch_index():
    """What docker_build.sh relies on: built with TORCH_INDEX empty, the CPU image shares every layer with the GPU
    image (only comments, the index's default and the NVIDIA settings differ)."""

    def steps(name: str) -> list[str]:
        text = (ROOT / "docker" / name).read_text()
        return [line for line in text.splitlines() if line and not line.startswith(("#", "ENV NVIDIA_"))]

    cpu, gpu = steps("Dockerfile.cpu"), steps("Dockerfile.gpu")
    assert [line for line in cpu if line.startswith("ARG TORCH_INDEX=")] == [
        "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu"
    ]
    assert [line if not line.startswith("ARG TORCH_INDEX=") else "ARG TORCH_INDEX=" for line in cpu] == gpu


def free_worker_port() -> int:
    """A first worker port of our own: TorchServe's workers listen on /tmp/.ts.sock.<port>, and other TorchServes on
    this machine use the default 9000 and up."""
    while True:
        port = random.randrange(20000, 60000, 10)
        if not any(Path(f"/tmp/.ts.sock.{port + i}").exists() for i in range(10)):
            return port


@contextmanager
def entrypoint_server(tmp_path: Path, **settings: str):
    """docker/entrypoint.sh run outside a container on free ports, serving the shapes model; ``settings`` replace or
    add config.properties lines. Yields (app folder, environment, ports); stops it and checks nothing is left."""
    app = tmp_path / "app"
    for part in ["handlers", "scripts", "examples", "docker"]:
        shutil.copytree(ROOT / part, app / part, ignore=shutil.ignore_patterns("__pycache__", "*.mar"))
    for part in ["serve.sh", "archive.sh", "config.properties", "requirements.txt", "requirements-dev.txt"]:
        shutil.copy2(ROOT / part, app / part)
    (app / ".venv").symlink_to(ROOT / ".venv")
    ports = free_ports(5)
    config = derived_config(app / "model_store", ports)
    for key, value in {"initial_worker_port": str(free_worker_port()), **settings}.items():
        config, n = re.subn(rf"^{key}=.*$", f"{key}={value}", config, flags=re.MULTILINE)
        config += "" if n else f"\n{key}={value}\n"
    (tmp_path / "source.properties").write_text(config)
    env = {**os.environ, "TMPDIR": str(tmp_path), "VIZ_MODELS": "shapes", "VIZ_BIND": "127.0.0.1",
           "VIZ_CONFIG": str(tmp_path / "source.properties"), "VIZ_RUN_DIR": str(tmp_path / "run")}  # fmt: skip
    proc = subprocess.Popen([str(app / "docker" / "entrypoint.sh")], env=env, cwd=app, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield app, env, ports
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not stop_torchserve(app, app, env), "TorchServe outlived the entry point"


def healthcheck(app: Path, env: dict) -> tuple[int, dict]:
    check = subprocess.run([str(app / "docker" / "healthcheck.sh")], env=env, capture_output=True, timeout=60)
    return check.returncode, json.loads(check.stdout)


def wait_healthy(app: Path, env: dict, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        code, report = healthcheck(app, env)
        if code == 0:
            return report
    pytest.fail(f"not healthy in {timeout:.0f} s: {report}")


@pytest.mark.integration
def test_entrypoint_serves_outside_a_container_and_the_healthcheck_passes(tmp_path):
    with entrypoint_server(tmp_path) as (app, env, ports):
        report = wait_healthy(app, env)
        assert report["status"] == "Healthy" and report["ping"] == "Healthy"
        assert report["models"]["shapes_viz"][0].startswith("READY ")
        key = json.loads((app / "key_file.json").read_text())["inference"]["key"]
        config = (tmp_path / "run" / "config.properties").read_text()
        assert f"inference_address=http://127.0.0.1:{ports[0]}" in config
        assert f"management_address=http://127.0.0.1:{ports[1]}" in config  # management never follows VIZ_BIND
        r = requests.post(f"http://127.0.0.1:{ports[0]}/predictions/shapes_viz", data={"mode": "layers"},
                          headers={"Authorization": f"Bearer {key}"}, timeout=60)  # fmt: skip
        assert r.status_code == 200 and r.json()["arch"] == "shapes"


@pytest.mark.integration
def test_healthcheck_survives_key_expiry_and_fails_while_a_model_has_no_ready_worker(tmp_path):
    """Keys that expire after 6 s: the check stays healthy on expired keys without touching the inference key; a
    killed worker makes it fail until TorchServe has started a new one."""
    with entrypoint_server(tmp_path, token_expiration_min="0.1") as (app, env, ports):
        wait_healthy(app, env)
        keys = json.loads((app / "key_file.json").read_text())
        inference, management = (f"http://127.0.0.1:{port}" for port in ports[:2])

        def rejected(url: str, kind: str) -> bool:  # the key of that kind in `keys`
            auth = {"Authorization": f"Bearer {keys[kind]['key']}"}
            return requests.get(url, headers=auth, timeout=10).status_code == 400

        deadline = time.monotonic() + 60
        while not (rejected(f"{inference}/ping", "inference") and rejected(f"{management}/models", "management")):
            assert time.monotonic() < deadline, "the keys did not expire"
            time.sleep(1)
        code, report = healthcheck(app, env)
        assert code == 0, report
        assert report["ping"].startswith("answering") and report.get("rotated") == "management"
        after = json.loads((app / "key_file.json").read_text())
        assert after["inference"] == keys["inference"]  # never rotated by the check: clients hold that key
        assert after["management"]["key"] != keys["management"]["key"]

        # A client that makes itself a new key with the API key is served (the check did not get in the way).
        api = {"Authorization": f"Bearer {after['API']['key']}"}
        assert requests.post(f"{management}/token?type=inference", headers=api, timeout=10).ok
        new_key = {"Authorization": f"Bearer {json.loads((app / 'key_file.json').read_text())['inference']['key']}"}
        r = requests.post(f"{inference}/predictions/shapes_viz", data={"mode": "layers"}, headers=new_key, timeout=60)
        assert r.status_code == 200

        [worker] = report["models"]["shapes_viz"]
        pid = int(worker.split()[1])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:  # TorchServe starts a new worker within seconds: catch the gap
            code, report = healthcheck(app, env)
            if code != 0:
                break
            assert time.monotonic() < deadline, f"still healthy after the worker was killed: {report}"
        assert report["status"] == "Unhealthy" and report["no_ready_worker"] == ["shapes_viz"], report
        report = wait_healthy(app, env, timeout=120)
        assert str(pid) not in report["models"]["shapes_viz"][0]  # a new worker


@pytest.mark.parametrize("name, protocol", [("inferenceservice.yaml", "v1"), ("inferenceservice-v2.yaml", "v2")])
def test_kserve_inferenceservice_has_gpu_replicas_and_autoscaling(name, protocol):
    isvc = yaml.safe_load((ROOT / "kserve" / name).read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] >= 1 and predictor["maxReplicas"] > predictor["minReplicas"]
    assert predictor["scaleMetric"] in ("concurrency", "rps", "cpu", "memory") and predictor["scaleTarget"] > 0
    model = predictor["model"]
    # the protocol picks TorchServe's envelope: the runtime sets TS_SERVICE_ENVELOPE, config.properties reads it
    assert model["modelFormat"]["name"] == "pytorch" and model["storageUri"] and model["protocolVersion"] == protocol
    for part in ("requests", "limits"):
        assert model["resources"][part]["nvidia.com/gpu"] == "1"


def test_kserve_config_lists_the_archives_and_keeps_registration_off():
    text = (ROOT / "kserve" / "config" / "config.properties").read_text()
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["enable_model_api"] == "false" and props["model_store"] == "/mnt/models/model-store"
    assert props["management_address"].startswith("http://127.0.0.1:")
    snapshot = json.loads(props["model_snapshot"])
    assert snapshot["modelCount"] == len(snapshot["models"])
    assert set(snapshot["models"]) == {"alexnet_viz", "vgg16_viz", "resnet18_viz", "shapes_viz"}
    for name, versions in snapshot["models"].items():
        # TorchServe's KServe envelopes answer only the first request of a batch (tests/integration/test_kserve.py)
        assert versions["1.0"]["marName"] == f"{name}.mar" and versions["1.0"]["batchSize"] == 1
    assert props["service_envelope"] == "$$TS_SERVICE_ENVELOPE$$"  # as KServe's runtime sets it, v1 or v2


def test_compose_files_are_valid_against_the_compose_specification(tmp_path):
    """check-jsonschema's copy of the Compose Specification schema (needs no Docker at all)."""
    import sys

    tool = [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    ok = subprocess.run([*tool, *(str(ROOT / name) for name in COMPOSE_FILES)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  viz:\n    ports: 8080\n    deploy: {resources: {reservations: {devices: 1}}}\n")
    assert subprocess.run([*tool, str(broken)], capture_output=True).returncode != 0  # the check can fail


def test_docker_compose_config_validates_both_files(tmp_path):
    """`docker-compose config` (Compose v1, Debian's docker-compose) or `docker compose config`: needs no engine."""
    if shutil.which("docker-compose"):
        compose = ["docker-compose"]
    elif (
        shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        compose = ["docker", "compose"]
    else:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed: apt-get install docker-compose")
    for name in COMPOSE_FILES:
        ok = subprocess.run([*compose, "-f", str(ROOT / name), "config", "-q"], capture_output=True, text=True)
        assert ok.returncode == 0, f"{name}: {ok.stdout}{ok.stderr}"
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  viz:\n    image: x\n    ports: {8080: 8080}\n    healthcheck: {retries: many}\n")
    assert subprocess.run([*compose, "-f", str(broken), "config", "-q"], capture_output=True).returncode != 0


def test_kserve_replicas_share_the_redis_of_its_manifest():
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "kserve" / "redis.yaml").read_text())}
    deployment, service = docs["Deployment"], docs["Service"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--appendonly yes" in container["args"][0] and "--requirepass" in container["args"][0]
    assert "noeviction" in container["args"][0]  # a full Redis refuses writes (503s) rather than drop queued jobs
    assert service["spec"]["ports"][0]["port"] == 6379
    for name in ("inferenceservice.yaml", "inferenceservice-v2.yaml"):
        env = yaml.safe_load((ROOT / "kserve" / name).read_text())["spec"]["predictor"]["model"]["env"]
        [store] = [e for e in env if e["name"] == "VIZ_JOB_STORE"]
        assert store["valueFrom"]["secretKeyRef"] == {"name": "cnn-viz-redis", "key": "url"}
