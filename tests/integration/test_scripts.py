"""serve.sh refuses a second server without touching the first one's log; every TorchServe the tests and benchmarks
start takes worker sockets from a range of its own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import psutil
import pytest

from scripts.local_torchserve import ROOT, WORKER_PORT_SPAN, derived_config, local_torchserve, worker_ports
from scripts.timing import interleaved


@pytest.fixture
def fake_torchserve():
    """A process whose command line reads like TorchServe's front end (``java ... org.pytorch.serve.ModelServer``)."""
    proc = subprocess.Popen(["bash", "-c", 'exec -a "java -cp x org.pytorch.serve.ModelServer" sleep 60'])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def serve_sh(tmp_path: Path, pid: int | None) -> subprocess.CompletedProcess:
    """./serve.sh copied into ``tmp_path``, with a stand-in setup.sh (exit 7 says the script got that far), a
    running server's console log, and TorchServe's pid file in its own TMPDIR."""
    shutil.copy2(ROOT / "serve.sh", tmp_path / "serve.sh")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\necho setup ran >&2\nexit 7\n")
    (tmp_path / "scripts" / "setup.sh").chmod(0o755)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "console.log").write_text("the running server's log\n")
    run = tmp_path / "run"
    run.mkdir()
    if pid is not None:
        (run / ".model_server.pid").write_text(str(pid))
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(run)}
    return subprocess.run([str(tmp_path / "serve.sh"), "shapes"], env=env, capture_output=True, text=True, timeout=30)


def test_serve_sh_refuses_a_second_server_and_keeps_its_log(tmp_path, fake_torchserve):
    done = serve_sh(tmp_path, fake_torchserve)
    assert done.returncode == 1
    assert f"serve.sh: TorchServe is already running (pid {fake_torchserve}, started in " in done.stderr
    assert done.stderr.rstrip().endswith("./serve.sh stop first")
    assert "setup ran" not in done.stderr
    assert (tmp_path / "logs" / "console.log").read_text() == "the running server's log\n"


@pytest.mark.parametrize("pid", [None, "dead", "other"])
def test_serve_sh_goes_on_past_a_missing_or_stale_pid_file(tmp_path, pid):
    other = subprocess.Popen(["sleep", "60"])  # alive, but not TorchServe
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        done = serve_sh(tmp_path, {None: None, "dead": dead.pid, "other": other.pid}[pid])
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 7 and "setup ran" in done.stderr, done.stderr
    assert "already running" not in done.stderr


def test_two_servers_at_once_get_ranges_that_do_not_overlap(tmp_path):
    got: list[range] = []
    both_held = threading.Barrier(2)

    def take():
        with worker_ports() as ports:
            got.append(ports)
            both_held.wait(timeout=10)  # each keeps its range while the other takes one

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    a, b = got
    assert len(a) == len(b) == WORKER_PORT_SPAN
    assert not set(a) & set(b)
    assert 9000 not in a and 9000 not in b  # the dev server's


def _bindable_bases(n: int) -> list[int]:
    """``n`` bases whose first port nothing holds now (a server of another test may hold any base of the real list)."""
    found = []
    for base in range(31_900, 10_000, -WORKER_PORT_SPAN):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base))
            except OSError:
                continue
        found.append(base)
        if len(found) == n:
            return found
    raise AssertionError(f"fewer than {n} bindable ports among the worker bases")


def test_a_held_or_used_range_is_skipped(tmp_path):
    bases = _bindable_bases(3)
    (tmp_path / f".ts.sock.{bases[1] + 7}").touch()  # a socket of some other server, inside the middle range
    with worker_ports(bases=bases, socket_dir=tmp_path) as first:
        with worker_ports(bases=bases, socket_dir=tmp_path) as second:
            assert {first.start, second.start} == {bases[0], bases[2]}
            with pytest.raises(RuntimeError, match="no free range of 100 worker ports"):
                with worker_ports(bases=bases, socket_dir=tmp_path):
                    pass
        (tmp_path / f".ts.sock.{first.start}").touch()  # what a worker leaves behind ...
    assert not (tmp_path / f".ts.sock.{first.start}").exists()  # ... is removed with the range
    with socket.socket() as s:
        s.bind(("127.0.0.1", first.start))  # and the hold is released


def test_derived_config_sets_the_worker_port():
    text = derived_config(Path("/store"), [1, 2, 3, 4, 5], 12_300)
    assert "\ninitial_worker_port=12300\n" in text and "initial_worker_port=9000" not in text
    chosen = int(derived_config(Path("/store"), [1, 2, 3, 4, 5]).split("initial_worker_port=")[1].split()[0])
    assert 10_000 <= chosen < 32_000 and chosen % WORKER_PORT_SPAN == 0
    assert "\ninitial_worker_port=9000\n" in (ROOT / "config.properties").read_text()


def worker_sockets(server, model: str) -> list[int]:
    """The socket numbers that the workers of ``model`` listen on, from their command lines."""
    found = []
    for pid in server.worker_pids(model):
        args = psutil.Process(pid).cmdline()
        name = args[args.index("--sock-name") + 1]
        assert name.startswith("/tmp/.ts.sock."), args
        found.append(int(name.rsplit(".", 1)[1]))
    return found


@pytest.mark.integration
def test_a_second_server_beside_the_first_uses_its_own_sockets(server, tmp_path):
    first = {m: server.worker_pids(m) for m in ("alexnet_viz", "shapes_viz")}
    assert all(p in server.worker_ports for p in worker_sockets(server, "alexnet_viz"))
    store = server.workdir / "model_store"
    with local_torchserve(store, ["shapes_viz.mar"], tmp_path) as second:
        assert not set(second.worker_ports) & set(server.worker_ports)
        [port] = worker_sockets(second, "shapes_viz")
        assert port in second.worker_ports and Path(f"/tmp/.ts.sock.{port}").exists()
        r = second.post("shapes_viz", data={"mode": "layers"})
        assert r.status_code == 200
    assert {m: server.worker_pids(m) for m in first} == first  # the first server's workers were left alone
    assert server.post("shapes_viz", data={"mode": "layers"}).status_code == 200


def test_interleaved_blocks_time_only_after_settling_and_keep_each_block_together():
    calls: list[str] = []
    variants = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved(variants, rounds=2, warmup=1, block=3, settle=2)
    assert {name: len(ms) for name, ms in times.items()} == {"a": 6, "b": 6, "c": 6}  # 2 rounds x 3, warm-up untimed
    assert len(calls) == 3 * 3 * 5  # 3 rounds (1 warm-up) x 3 variants x (2 settling + 3 timed)
    runs = [calls[i : i + 5] for i in range(0, len(calls), 5)]
    assert all(len(set(run)) == 1 for run in runs)  # a variant's calls follow each other
    assert {name: len(ms) for name, ms in interleaved(variants, rounds=4).items()} == {"a": 4, "b": 4, "c": 4}
