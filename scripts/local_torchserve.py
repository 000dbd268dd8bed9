"""Start a private TorchServe on loopback for tests and benchmarks, and always stop it.

It runs in its own folder (its key_file.json, logs and pid file stay there), on free ports, with its own range of
worker ports, and with the repository's config.properties otherwise unchanged.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# TorchServe's workers listen on unix sockets /tmp/.ts.sock.N (Java's java.io.tmpdir, not $TMPDIR), N counting up
# from initial_worker_port, one per worker it creates; a new worker removes a socket already at its name. So each
# server gets a range of its own: never the dev server's (config.properties: 9000 up), never another test's.
SOCKET_DIR = Path("/tmp")
WORKER_PORT_SPAN = 100
WORKER_PORT_BASES = range(10_000, 32_000, WORKER_PORT_SPAN)  # below the kernel's ephemeral ports (free_ports)


@dataclass
class Server:
    url: str
    management: str
    metrics: str
    key: str
    management_key: str
    workdir: Path
    worker_ports: range = range(0)

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}  # no key: token authorization is off

    def post(self, model: str, **kw) -> requests.Response:
        headers = {**self.auth(), **kw.pop("headers", {})}
        session = kw.pop("session", requests)
        return session.post(f"{self.url}/predictions/{model}", headers=headers, timeout=120, **kw)

    def job(self, model: str, timeout: float = 300, every: float = 0.5, **kw) -> tuple[requests.Response, list[dict]]:
        """Submit an optimization (``kw`` as for :meth:`post`), poll it until it is done, and return the final
        response with the states polled on the way (the submission's 202 state first). A response other than 202
        to the submission is returned as it is."""
        first = self.post(model, **kw)
        if first.status_code != 202:
            return first, []
        states = [first.json()]
        deadline = time.monotonic() + timeout
        while True:
            r = self.post(model, data={"job": states[0]["job"]})
            if r.status_code != 202 or time.monotonic() > deadline:
                return r, states
            states.append(r.json())
            time.sleep(every)

    def worker_pids(self, model: str) -> list[int]:
        auth = {"Authorization": f"Bearer {self.management_key}"} if self.management_key else {}
        r = requests.get(f"{self.management}/models/{model}", headers=auth, timeout=10)
        r.raise_for_status()
        return sorted(w["pid"] for w in r.json()[0]["workers"] if w["status"] == "READY")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _range_is_unused(base: int, span: int, socket_dir: Path) -> bool:
    return not any((socket_dir / f".ts.sock.{port}").exists() for port in range(base, base + span))


@contextmanager
def worker_ports(
    span: int = WORKER_PORT_SPAN, bases: Sequence[int] = WORKER_PORT_BASES, socket_dir: Path = SOCKET_DIR
) -> Iterator[range]:
    """A range of ``span`` worker ports, held for one TorchServe until the block ends, then its sockets removed.

    The range starts at one of ``bases`` (tried in random order), all multiples of ``span`` apart, so two ranges
    never overlap; none of its sockets may exist in ``socket_dir``. It is held by binding a TCP socket to its first
    port on loopback: a second process looking at the same time cannot take it, and the hold ends with the process.
    """
    for base in random.sample(list(bases), len(bases)):
        if not _range_is_unused(base, span, socket_dir):
            continue
        hold = socket.socket()
        try:
            hold.bind(("127.0.0.1", base))
        except OSError:
            hold.close()
            continue
        try:
            yield range(base, base + span)
        finally:
            hold.close()
            for port in range(base, base + span):  # TorchServe leaves them behind; the next user would see them
                (socket_dir / f".ts.sock.{port}").unlink(missing_ok=True)
                (socket_dir / f".ts.sock.{port}.lock").unlink(missing_ok=True)
        return
    raise RuntimeError(f"no free range of {span} worker ports among {len(bases)}: /tmp/.ts.sock.* left by old servers?")


def derived_config(store: Path, ports: Sequence[int], worker_port: int | None = None) -> str:
    """config.properties as shipped, with other ports and model store, and ``initial_worker_port`` set to
    ``worker_port`` (from :func:`worker_ports`); without one, to the start of a range unused right now (not held:
    another server may pick it too, though among 220 ranges that is unlikely)."""
    text = (ROOT / "config.properties").read_text()
    inf, mgmt, met, grpc_inf, grpc_mgmt = ports
    if worker_port is None:
        worker_port = next(
            b for b in random.sample(list(WORKER_PORT_BASES), len(WORKER_PORT_BASES))
            if _range_is_unused(b, WORKER_PORT_SPAN, SOCKET_DIR)
        )  # fmt: skip
    for key, value in {
        "inference_address": f"http://127.0.0.1:{inf}",
        "management_address": f"http://127.0.0.1:{mgmt}",
        "metrics_address": f"http://127.0.0.1:{met}",
        "grpc_inference_port": str(grpc_inf),
        "grpc_management_port": str(grpc_mgmt),
        "initial_worker_port": str(worker_port),
        "model_store": str(store),
    }.items():
        text, n = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        if n != 1:
            raise ValueError(f"config.properties has no {key}")
    return text


KSERVE_CONFIG = ROOT / "kserve" / "config" / "config.properties"


def kserve_config(store: Path, ports: Sequence[int], worker_port: int, models: Sequence[str]) -> str:
    """kserve/config/config.properties as KServe's TorchServe runtime reads it, changed only where a test server
    on this machine must differ: loopback addresses on ``ports``, ``initial_worker_port`` (the file has none: a pod
    has one TorchServe), ``store`` as the model store, and the model snapshot cut to ``models`` (their entries as
    the file has them)."""
    text = KSERVE_CONFIG.read_text()
    inf, mgmt, met, grpc_inf, grpc_mgmt = ports
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    snapshot = json.loads(props["model_snapshot"])
    snapshot["models"] = {name: snapshot["models"][name] for name in models}
    snapshot["modelCount"] = len(models)
    changes = {
        "inference_address": f"http://127.0.0.1:{inf}",
        "management_address": f"http://127.0.0.1:{mgmt}",
        "metrics_address": f"http://127.0.0.1:{met}",
        "grpc_inference_port": str(grpc_inf),
        "grpc_management_port": str(grpc_mgmt),
        "model_store": str(store),
        "model_snapshot": json.dumps(snapshot, separators=(",", ":")),
    }
    for key, value in changes.items():
        line = f"{key}={value}"
        text, n = re.subn(rf"^{key}=.*$", lambda _, line=line: line, text, flags=re.MULTILINE)  # no escapes read
        if n != 1:
            raise ValueError(f"kserve/config/config.properties has no {key}")
    return text + f"initial_worker_port={worker_port}\n"


@contextmanager
def kserve_torchserve(store: Path, models: Sequence[str], workdir: Path, envelope: str) -> Iterator[Server]:
    """TorchServe as KServe's TorchServe runtime starts it in a predictor pod: ``torchserve --start
    --model-store=... --ts-config=...`` on :func:`kserve_config`, with ``TS_SERVICE_ENVELOPE=envelope`` in its
    environment, as the runtime sets it from the InferenceService's protocolVersion (``kserve`` for v1,
    ``kservev2`` for v2). Token authorization is off in that file (KServe's wrapper sends no keys): the yielded
    server has no key."""
    with worker_ports() as workers:
        ports = free_ports(5)
        config = kserve_config(store, ports, workers.start, models)
        start = [f"--model-store={store}", f"--ts-config={workdir / 'config.properties'}"]
        yield from _serve(workdir, models, 240, workers, ports, config, start, {"TS_SERVICE_ENVELOPE": envelope})


FRONT_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"  # scripts/setup.sh --dev (requirements-kserve.txt)


@contextmanager
def kserve_front(server: Server, protocol: str, timeout: float = 120) -> Iterator[str]:
    """KServe's model server in front of ``server`` (from :func:`kserve_torchserve`), as kserve/front.py runs in a
    predictor pod: reading the server's config.properties, with KServe's ``PROTOCOL_VERSION`` (``v1`` or ``v2``).
    Yields its URL once ``/v2/health/ready`` answers; stopped (SIGTERM, then killed after 30 s) on exit. KServe's
    model server binds every interface (``0.0.0.0``, fixed in KServe), on a free port, for the block only. Its log:
    ``front.log`` in the server's folder."""
    if not FRONT_PYTHON.exists():
        raise FileNotFoundError(f"{FRONT_PYTHON} missing: run ./scripts/setup.sh --dev (requirements-kserve.txt)")
    [port] = free_ports(1)
    env = {**os.environ, "CONFIG_PATH": str(server.workdir / "config.properties"), "PROTOCOL_VERSION": protocol}
    command = [str(FRONT_PYTHON), str(ROOT / "kserve" / "front.py"), "--http_port", str(port)]
    with open(server.workdir / "front.log", "wb") as out:
        front = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=server.workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if front.poll() is not None or time.monotonic() > deadline:
                tail = (server.workdir / "front.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"KServe's model server not ready (exit code {front.poll()}); its log:\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        front.terminate()
        try:
            front.wait(30)
        except subprocess.TimeoutExpired:
            front.kill()
            front.wait(10)


def processes_in(workdir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(workdir) in part for part in p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_torchserve(cwd: Path, marker: Path, env: dict) -> list[int]:
    """``torchserve --stop`` in ``cwd``; wait up to 30 s for every process whose command line mentions ``marker`` to
    end, kill those left, and return their PIDs (empty when it stopped by itself)."""
    subprocess.run([str(BIN / "torchserve"), "--stop"], cwd=cwd, env=env, timeout=60, capture_output=True)
    deadline = time.monotonic() + 30
    while processes_in(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = processes_in(marker)
    for p in left:
        p.kill()
    return [p.pid for p in left]


def seeded_alexnet_archive(store: Path, archive_args: Sequence[str] = ()) -> Path:
    """``store/alexnet_viz.mar`` with seeded random weights (seed 0), for the benchmarks; ``archive_args``: more
    options of archive.sh (caps, budgets). Returns the archive's path."""
    import torch

    sys.path.insert(0, str(ROOT / "handlers"))
    from cnnviz import random_state_dict

    store.mkdir(parents=True, exist_ok=True)
    weights = store / "alexnet_seeded.pt"
    torch.save(random_state_dict("alexnet", seed=0), weights)
    build = [str(ROOT / "archive.sh"), "--weights", str(weights), "--out", str(store), *archive_args, "alexnet"]
    subprocess.run(build, check=True)
    weights.unlink()
    return store / "alexnet_viz.mar"


@contextmanager
def seeded_alexnet_server(prefix: str, archive_args: Sequence[str] = ()) -> Iterator[Server]:
    """A private TorchServe serving ``alexnet_viz`` with seeded random weights (seed 0), for the benchmarks;
    ``archive_args``: more options of archive.sh (caps, budgets)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        seeded_alexnet_archive(work / "store", archive_args)
        with local_torchserve(work / "store", ["alexnet_viz.mar"], work) as server:
            yield server


@contextmanager
def local_torchserve(
    store: Path,
    archives: Sequence[str],
    workdir: Path,
    timeout: float = 240,
    drop: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cpus: Sequence[int] | None = None,
) -> Iterator[Server]:
    """TorchServe serving ``archives`` from ``store``; yields once every model answers, stops on exit. ``drop``:
    keys of config.properties left out, so that TorchServe's own default applies (benchmarks of its defaults).
    ``env``: more environment for TorchServe and its workers (``VIZ_JOB_STORE``: replicas sharing a Redis).
    ``cpus``: the cores it runs on (``taskset``: its frontend and every worker it starts inherit them), so that
    servers on one machine behave like servers on machines of their own.

    Raises RuntimeError if it is not ready in ``timeout`` seconds, or if anything of it survives ``--stop``.
    """
    with worker_ports() as workers:
        ports = free_ports(5)
        config = derived_config(store, ports, workers.start)
        config = "".join(line for line in config.splitlines(keepends=True) if line.split("=", 1)[0] not in drop)
        start = ["--ncs", "--ts-config", str(workdir / "config.properties"), "--model-store", str(store), "--models",
                 *archives]  # fmt: skip
        names = [Path(a).name.removesuffix(".mar") for a in archives]
        yield from _serve(workdir, names, timeout, workers, ports, config, start, env, cpus)


def _serve(
    workdir: Path,
    names: Sequence[str],
    timeout: float,
    workers: range,
    ports: Sequence[int],
    config: str,
    start_args: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
    cpus: Sequence[int] | None = None,
) -> Iterator[Server]:
    (workdir / "config.properties").write_text(config)
    tokens = "disable_token_authorization=true" not in config.splitlines()
    # TMPDIR: its own pid file
    env = {**os.environ, "TMPDIR": str(workdir), "PATH": f"{BIN}:{os.environ['PATH']}", **(extra_env or {})}
    start = [str(BIN / "torchserve"), "--start", *start_args]
    if cpus:
        start = ["taskset", "-c", ",".join(str(c) for c in cpus), *start]
    subprocess.run(start, cwd=workdir, env=env, check=True, timeout=60, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(1)
            try:
                keys = json.loads((workdir / "key_file.json").read_text()) if tokens else None
                server = Server(
                    url=f"http://127.0.0.1:{ports[0]}",
                    management=f"http://127.0.0.1:{ports[1]}",
                    metrics=f"http://127.0.0.1:{ports[2]}",
                    key=keys["inference"]["key"] if keys else "",
                    management_key=keys["management"]["key"] if keys else "",
                    workdir=workdir,
                    worker_ports=workers,
                )
                if all(server.worker_pids(name) for name in names):
                    break
            except (OSError, ValueError, KeyError, IndexError, requests.RequestException):
                pass
            if time.monotonic() > deadline:
                log = workdir / "logs" / "model_log.log"
                tail = log.read_text()[-3000:] if log.exists() else "(no model log)"
                raise RuntimeError(f"TorchServe not ready after {timeout:.0f} s; model log:\n{tail}")
        yield server
    finally:
        left = stop_torchserve(workdir, workdir, env)
        if left:
            raise RuntimeError(f"TorchServe still running after --stop: {left} (killed)")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", ports[0])) == 0:
                raise RuntimeError("inference port still open after --stop")
