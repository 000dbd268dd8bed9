"""Where jobs live: the queue of submitted jobs, their states, checkpoints, cancel requests and answers.

Two backends behind one interface (:class:`Store`), chosen by one setting (:func:`make_store`):

- :class:`FolderStore` (the default): one private folder per model on this machine. Every worker of the model on
  this machine shares it: a submitted job is a record file (``ID.rec``) that any worker with a free job slot
  claims by taking an exclusive ``flock`` on it; the kernel drops that lock when the worker's process dies, so a
  job whose worker died is claimed again by the next worker with a free slot (TorchServe's restarted one or
  another), and resumed from its checkpoint. No lease to renew: the lock lives exactly as long as its process.
- :class:`vizserve.redisstore.RedisStore` (``VIZ_JOB_STORE=redis://HOST:PORT/DB``): one Redis that several servers
  (replicas) share; a stream with a consumer group is the queue, keys with expiry hold the rest.

A job submitted as a finished :class:`~vizserve.jobs.Work` object instead of a record (``record=None``) is not in
the queue: only the worker that has it in memory can run it, and it is lost with that worker (as all jobs were
before checkpoints).

The folder store is hardened against other local users: the folder and its parent must belong to this server's
user (or root, for the parent, which must be sticky where others may write to it, as ``/tmp`` is), the folder is
opened once and every file is opened relative to it without following symbolic links (``O_NOFOLLOW``) and checked
to be a regular file of ours with one link; the cap on kept answers (``max_kept``, ``max_kept_bytes``) is enforced
when an answer is written, under a lock of the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "JOB_ID", "Busy", "Claim", "FolderStore", "JobLimits", "Outcome", "QueueInfo", "Store", "StoreUnavailable",
    "default_job_dir", "make_store",
]  # fmt: skip

#: What :func:`secrets.token_urlsafe` (16 bytes) makes; anything else is no job of ours (never a path, never a key).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True)
class JobLimits:
    """Caps of the job system (model-config.yaml's ``handler:`` section sets them through :class:`Limits`)."""

    max_jobs: int = 4  # jobs one worker runs at once (interleaved); more wait in the queue
    compute_seconds: float = 90.0  # compute a job gets (its steps' time, summed)
    wall_seconds: float = 300.0  # wall-clock ceiling from submission to the answer
    keep_seconds: float = 600.0  # a finished job's answer is kept this long, then a poll gets 404
    max_kept: int = 64  # finished jobs kept per model; the oldest go first
    max_kept_bytes: int = 256 * 1024 * 1024  # their answers' bytes, together
    progress_every: float = 1.0  # seconds between progress writes (with a preview) of a running job
    lost_after: float = 120.0  # a job that is not in the queue (a Work object) and whose state is this old is lost
    max_queued: int = 16  # jobs waiting for a slot in the whole queue (every worker of every replica); more: 429
    lease_seconds: float = 15.0  # Redis: a job whose worker did not renew its claim for this long is taken over
    checkpoint_every: float = 5.0  # seconds between checkpoints of a running job
    max_resumes: int = 3  # a job whose workers died this many times fails (it may be what kills them)
    retry_after_s: float = 5.0  # Retry-After of a 503 while the store cannot be reached


@dataclass(frozen=True)
class Outcome:
    """A job's answer: exactly what the synchronous request would have answered."""

    status: int
    content_type: str
    body: bytes


class Busy(Exception):
    """No room for another job; ``retry_after`` seconds is when there is expected to be."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(Exception):
    """The job store cannot be reached (Redis down or unreachable): answer 503 with ``Retry-After:
    retry_after``. Jobs already running go on and write again when it is back."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Claim:
    """A job a worker took from the queue: its record, its last checkpoint (``None``: none yet) and its state."""

    job_id: str
    record: bytes
    checkpoint: bytes | None
    state: dict[str, Any]


@dataclass(frozen=True)
class QueueInfo:
    queued: int  # jobs waiting for a slot
    workers: int  # workers that take jobs from this queue (at least 1: this one)


class Store(Protocol):
    """What the scheduler needs of a store. Every method may raise :class:`StoreUnavailable`."""

    needs_renewal: bool  # claims expire unless renewed (Redis); a folder's locks live as long as their process
    blocking: bool  # claim(wait=...) waits for a job (Redis); else the scheduler polls
    shared: bool  # every replica that names the store sees its jobs (Redis); a folder: this machine's workers

    def enqueue(self, job_id: str, record: bytes | None, state: dict[str, Any]) -> None: ...
    def claim(self, consumer: str, takeover: bool, wait: float = 0.0) -> Claim | None: ...
    def renew(self, consumer: str, job_ids: list[str]) -> set[str]: ...
    def release(self, consumer: str, job_id: str) -> None: ...
    def queue(self) -> QueueInfo: ...
    def in_queue(self, job_id: str) -> bool: ...
    def write_state(self, job_id: str, state: dict[str, Any]) -> None: ...
    def read_state(self, job_id: str) -> dict[str, Any] | None: ...
    def read_state_bytes(self, job_id: str) -> bytes | None: ...
    def write_checkpoint(self, job_id: str, data: bytes) -> None: ...
    def write_result(self, job_id: str, state: dict[str, Any], outcome: Outcome) -> None: ...
    def read_result(self, job_id: str) -> bytes | None: ...
    def request_cancel(self, job_id: str) -> None: ...
    def cancelled(self, job_ids: list[str]) -> set[str]: ...
    def remove(self, job_id: str) -> None: ...
    def sweep(self, now: float | None = None) -> int: ...
    def close(self) -> None: ...


def default_job_dir(model: str) -> Path:
    """``<system temp dir>/cnnviz-jobs/<model>`` (``jobs.dir``, or ``$VIZ_JOB_DIR``, as vizserve.config reads them,
    takes its place)."""
    base = str(Path(tempfile.gettempdir()) / "cnnviz-jobs")
    return Path(base) / model


def make_store(
    spec: str | Path | None, model: str, limits: JobLimits = JobLimits(), *, folder: str | Path | None = None
) -> Store:
    """The store that ``spec`` names (``jobs.store`` of :class:`vizserve.config.ServerConfig`, which defaults to
    ``$VIZ_JOB_STORE``; empty or ``None``: ``folder``, else :func:`default_job_dir`): ``redis://HOST:PORT/DB``
    (``rediss://`` for TLS, ``redis://:PASSWORD@HOST...`` with a password) is
    :class:`~vizserve.redisstore.RedisStore` under the key prefix ``viz:<model>:``; a path is a :class:`FolderStore`
    there."""
    spec = str(spec or "").strip() or str(folder or "")  # the environment is read once, by vizserve.config
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from .redisstore import RedisStore

        return RedisStore(spec, model, limits)
    if "://" in spec:
        raise ValueError(
            f"job store {spec.split('://')[0]}:// is not one this server knows: VIZ_JOB_STORE (or job_store) is "
            "redis://HOST:PORT/DB, a folder, or empty for the default folder"
        )
    return FolderStore(Path(spec) if spec else default_job_dir(model), limits)


# -- the folder store ------------------------------------------------------------------------------------------------

_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC
_SUFFIXES = (".out", ".json", ".cancel", ".rec", ".ckpt")


def _check_parent(parent: Path, uid: int) -> None:
    st = os.stat(parent)
    if st.st_uid not in (uid, 0):
        raise PermissionError(
            f"the job folder's parent {parent} belongs to uid {st.st_uid}, not to this server (uid {uid}) nor root: "
            "its owner could swap the job folder; set VIZ_JOB_DIR to a folder of this server's user"
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(
            f"the job folder's parent {parent} may be written by other users and is not sticky (mode "
            f"{stat.S_IMODE(st.st_mode):o}): they could swap the job folder; set VIZ_JOB_DIR to a private folder"
        )


class FolderStore:
    """Job states (``ID.json``), answers (``ID.out``), records (``ID.rec``), checkpoints (``ID.ckpt``) and cancel
    requests (``ID.cancel``) in one folder per model, private to the server's user; shared by the model's workers
    on this machine (see the module's docstring)."""

    needs_renewal = False
    blocking = False
    shared = False  # this machine's workers only: KServe's envelopes cannot poll a job that may be on another replica

    def __init__(self, folder: Path, limits: JobLimits = JobLimits()) -> None:
        self.folder = Path(folder)
        self.limits = limits
        uid = os.getuid()
        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _check_parent(parent, uid)
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.mkdir(self.folder.name, 0o700, dir_fd=pfd)
            except FileExistsError:
                pass
            try:
                self._fd = os.open(self.folder.name, os.O_RDONLY | os.O_DIRECTORY | _OPEN, dir_fd=pfd)
            except OSError as exc:  # ELOOP: a symbolic link where the folder should be
                raise PermissionError(f"job folder {self.folder} is not a folder of this server ({exc})") from None
        finally:
            os.close(pfd)
        st = os.fstat(self._fd)
        if st.st_uid != uid:
            os.close(self._fd)
            raise PermissionError(f"job folder {self.folder} belongs to uid {st.st_uid}, not to this server")
        if st.st_mode & 0o077:
            os.fchmod(self._fd, 0o700)  # results are the callers' data: no one else reads them
        self._held: dict[str, int] = {}  # job ID -> the open, locked record of a job this store's worker runs

    def close(self) -> None:
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- files, relative to the folder, never through a link ------------------------------------------------------

    @staticmethod
    def _name(job_id: str, suffix: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError("not a job ID")
        return f"{job_id}{suffix}"

    def _open_own(self, name: str) -> int:
        """An fd of ``name`` opened for reading: a regular file of ours with one link, never a symbolic link."""
        fd = os.open(name, os.O_RDONLY | _OPEN, dir_fd=self._fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_nlink != 1:
            os.close(fd)
            raise PermissionError(f"{self.folder / name} is not a plain file of this server")
        return fd

    def _read(self, name: str) -> bytes | None:
        try:
            fd = self._open_own(name)
        except (OSError, ValueError):
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def _write(self, name: str, data: bytes) -> None:
        tmp = f".tmp-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN, 0o600, dir_fd=self._fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # atomic: a reader sees the old file or the new one; a link in its place is replaced, never followed
            os.replace(tmp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self._fd)
            except OSError:
                pass
            raise

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self._fd)
        except FileNotFoundError:
            pass

    def _exists(self, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()

    def _names(self) -> list[str]:
        # A listing of its own open file description: os.listdir(fd) reads through a dup of the folder's fd, which
        # shares its position, so the request and the job thread listing at once saw names twice or not at all
        # (a queue of one job counted as two: a 429).
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self._fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    # -- states, answers, cancels ---------------------------------------------------------------------------------

    def write_state(self, job_id: str, state: dict[str, Any]) -> None:
        self._write(self._name(job_id, ".json"), json.dumps(state).encode())

    def read_state_bytes(self, job_id: str) -> bytes | None:
        try:
            return self._read(self._name(job_id, ".json"))
        except ValueError:
            return None

    def read_state(self, job_id: str) -> dict[str, Any] | None:
        data = self.read_state_bytes(job_id)
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def write_result(self, job_id: str, state: dict[str, Any], outcome: Outcome) -> None:
        """The answer first, then the state that points at it (a state that says done always has its answer), with
        the cap on kept answers enforced first, under the folder's lock; then the record and checkpoint go and the
        job's lock is released."""
        state = {**state, "status": outcome.status, "content_type": outcome.content_type, "bytes": len(outcome.body)}
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._make_room(len(outcome.body), state.get("finished") or time.time())
            self._write(self._name(job_id, ".out"), outcome.body)
            self.write_state(job_id, state)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        for suffix in (".rec", ".ckpt", ".cancel"):
            self._unlink(self._name(job_id, suffix))
        fd = self._held.pop(job_id, None)
        if fd is not None:
            os.close(fd)

    def read_result(self, job_id: str) -> bytes | None:
        try:
            return self._read(self._name(job_id, ".out"))
        except ValueError:
            return None

    def request_cancel(self, job_id: str) -> None:
        self._write(self._name(job_id, ".cancel"), b"")

    def cancelled(self, job_ids: list[str]) -> set[str]:
        return {j for j in job_ids if self._exists(self._name(j, ".cancel"))}

    def remove(self, job_id: str) -> None:
        for suffix in _SUFFIXES:
            self._unlink(self._name(job_id, suffix))

    def states(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in self._names():
            job_id = name.removesuffix(".json")
            if name.endswith(".json") and JOB_ID.fullmatch(job_id):
                state = self.read_state(job_id)
                if state is not None:
                    out[job_id] = state
        return out

    def _make_room(self, size: int, now: float) -> None:
        """Remove the oldest finished jobs until one more answer of ``size`` bytes fits the caps."""
        finished = sorted(
            (s["finished"], j, s.get("bytes", 0)) for j, s in self.states().items() if s.get("finished") is not None
        )
        total = sum(b for _, _, b in finished) + size
        while finished and (len(finished) + 1 > self.limits.max_kept or total > self.limits.max_kept_bytes):
            _, job_id, b = finished.pop(0)
            self.remove(job_id)
            total -= b

    def sweep(self, now: float | None = None) -> int:
        """Remove expired answers, long-lost jobs and leftover temporary files, then the oldest finished jobs while
        more than ``max_kept`` or ``max_kept_bytes`` are kept. Returns how many jobs went."""
        now = time.time() if now is None else now
        keep = self.limits.keep_seconds
        removed = 0
        finished = []
        for job_id, state in self.states().items():
            if state.get("finished") is not None:
                if now - state["finished"] > keep:
                    self.remove(job_id)
                    removed += 1
                else:
                    finished.append((state["finished"], job_id, state.get("bytes", 0)))
            elif now - state.get("submitted", state.get("updated", now)) > self.limits.wall_seconds + keep and (
                job_id not in self._held
            ):
                self.remove(job_id)  # far past its wall ceiling: no worker will answer it any more
                removed += 1
        for name in self._names():
            if name.startswith(".tmp-"):
                try:
                    if now - os.stat(name, dir_fd=self._fd, follow_symlinks=False).st_mtime > 60:
                        os.unlink(name, dir_fd=self._fd)
                except OSError:
                    pass
        finished.sort()
        total = sum(b for _, _, b in finished)
        while finished and (len(finished) > self.limits.max_kept or total > self.limits.max_kept_bytes):
            _, job_id, size = finished.pop(0)
            self.remove(job_id)
            total -= size
            removed += 1
        return removed

    # -- the queue: record files, claimed by a lock ---------------------------------------------------------------

    def enqueue(self, job_id: str, record: bytes | None, state: dict[str, Any]) -> None:
        """The state first, then the record (a worker claims only records that have a state)."""
        self.write_state(job_id, state)
        if record is not None:
            self._write(self._name(job_id, ".rec"), record)

    def write_checkpoint(self, job_id: str, data: bytes) -> None:
        self._write(self._name(job_id, ".ckpt"), data)

    def in_queue(self, job_id: str) -> bool:
        return self._exists(self._name(job_id, ".rec"))

    def _records(self) -> list[str]:
        return [n.removesuffix(".rec") for n in self._names() if n.endswith(".rec") and JOB_ID.fullmatch(n[:-4])]

    def claim(self, consumer: str, takeover: bool, wait: float = 0.0) -> Claim | None:
        """The oldest job whose record no worker holds: a queued one, or (``takeover``) one whose worker died."""
        candidates = []
        for job_id in self._records():
            if job_id in self._held:
                continue
            state = self.read_state(job_id)
            if state is None or (not takeover and state.get("state") != "queued"):
                continue
            candidates.append((state.get("submitted", 0.0), job_id))
        for _, job_id in sorted(candidates):
            try:
                fd = self._open_own(self._name(job_id, ".rec"))
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another worker runs it
                os.close(fd)
                continue
            state = self.read_state(job_id)  # again, under the lock: it may have ended since
            if state is None or state.get("finished") is not None:
                self._unlink(self._name(job_id, ".rec"))
                os.close(fd)
                continue
            with os.fdopen(os.dup(fd), "rb") as f:
                record = f.read()
            self._held[job_id] = fd
            return Claim(job_id, record, self._read(self._name(job_id, ".ckpt")), state)
        return None

    def renew(self, consumer: str, job_ids: list[str]) -> set[str]:
        return {j for j in job_ids if j in self._held}

    def release(self, consumer: str, job_id: str) -> None:
        """Give a job back unfinished (the worker stops): the next worker with a free slot resumes it."""
        fd = self._held.pop(job_id, None)
        if fd is not None:
            os.close(fd)

    def queue(self) -> QueueInfo:
        queued, pids = 0, {os.getpid()}
        for job_id in self._records():
            state = self.read_state(job_id) or {}
            if state.get("state") == "queued":
                queued += 1
            elif state.get("finished") is None and state.get("pid"):
                pids.add(int(state["pid"]))
        return QueueInfo(queued, len(pids))
