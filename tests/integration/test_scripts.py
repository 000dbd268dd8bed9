"""serve.sh refuses a second server without touching the first one's log."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.local_torchserve import ROOT


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
