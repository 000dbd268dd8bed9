"""The job store that several servers share: one Redis (``VIZ_JOB_STORE=redis://HOST:PORT/DB``).

What Redis gives, used as it is (keys under ``viz:<model>:``):

- ``queue``: a stream with the consumer group ``workers``. A submission is ``XADD``; a worker (a consumer named
  after its host, process and scheduler) with a free job slot takes the next entry with ``XREADGROUP``; the entry
  stays pending for that consumer until the job's answer is written (``XACK`` + ``XDEL``). A worker renews its
  claims every third of ``lease_seconds`` with ``XCLAIM ... JUSTID`` of its own entries (which resets their idle
  time and not their delivery count), after ``XPENDING`` showed they are still its own; an entry idle for
  ``lease_seconds`` (its worker died, or cannot reach Redis) is taken over by the next worker with a free slot with
  ``XAUTOCLAIM``, which resumes the job from its checkpoint. Queue depth for ``Retry-After``: ``XLEN`` less the
  pending entries; the workers taking jobs: ``XINFO CONSUMERS`` seen within three leases.
- ``job:ID:state`` (JSON), ``job:ID:record`` (what the submitter serialized), ``job:ID:ckpt`` (the last
  checkpoint), ``job:ID:cancel`` and ``job:ID:answer``: keys with expiry (``wall_seconds + keep_seconds`` while the
  job is queued or running, ``keep_seconds`` once it is answered). The answer is written with ``SET NX`` (the first
  answer wins, should two workers ever have run one job) before its state, and a running state is written only
  while there is no answer (``WATCH`` of the answer, ``MULTI``): it never replaces a finished one.
- ``done`` (a sorted set by finishing time) and ``sizes`` (a hash) bound the answers kept: at most ``max_kept`` and
  ``max_kept_bytes`` together, enforced as each answer is written (the oldest go).

Connection failures and timeouts become :class:`StoreUnavailable` (503 with ``Retry-After``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .jobstore import JOB_ID, Claim, JobLimits, Outcome, QueueInfo, StoreUnavailable

__all__ = ["RedisStore"]

GROUP = "workers"
#: Replies of a Redis that is up but cannot serve now: full (maxmemory with noeviction), loading its data, a replica
#: without its primary, a failed save.
_UNAVAILABLE = ("OOM", "LOADING", "MASTERDOWN", "MISCONF", "BUSY ")


def _redacted(url: str) -> str:
    """The URL without its password (it goes into error messages and logs)."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"


class RedisStore:
    """Jobs in one Redis under ``viz:<model>:`` (see the module's docstring). Thread-safe (a connection pool)."""

    needs_renewal = True
    blocking = True
    shared = True  # every replica that names it sees its jobs: KServe's envelopes may submit and poll them

    def __init__(self, url: str, model: str, limits: JobLimits = JobLimits(), *, prefix: str | None = None) -> None:
        self.url, self.limits = _redacted(url), limits
        self.prefix = prefix if prefix is not None else f"viz:{model}:"
        self.queue_key = self.prefix + "queue"
        # Short timeouts: a poll answers 503 within seconds when Redis is gone, never hangs a worker. One retry
        # reconnects a pooled connection that a restarted Redis closed (else its first use after the restart fails).
        self.r = redis.Redis.from_url(
            url, socket_timeout=3.0, socket_connect_timeout=2.0, retry=Retry(ExponentialBackoff(0.1, 0.01), 1),
            health_check_interval=15,
        )  # fmt: skip
        self._entries: dict[str, bytes] = {}  # job ID -> its stream entry, for the jobs this store's worker runs
        self._grouped = False

    def close(self) -> None:
        self.r.close()

    # -- helpers --------------------------------------------------------------------------------------------------

    def _key(self, job_id: str, part: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError("not a job ID")
        return f"{self.prefix}job:{job_id}:{part}"

    @property
    def _ttl(self) -> int:
        return math.ceil(self.limits.wall_seconds + self.limits.keep_seconds + self.limits.lease_seconds)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError) as exc:
            raise StoreUnavailable(
                f"the job store ({self.url}) cannot be reached: {exc}; try again in a few seconds",
                self.limits.retry_after_s,
            ) from None
        except redis.ResponseError as exc:
            if not str(exc).startswith(_UNAVAILABLE):
                raise
            raise StoreUnavailable(
                f"the job store ({self.url}) takes no writes now: {exc}; try again later", self.limits.retry_after_s
            ) from None

    def _group(self) -> None:
        """The consumer group, made once (again after a Redis that lost its data restarted: NOGROUP)."""
        if self._grouped:
            return
        try:
            self.r.xgroup_create(self.queue_key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped = True

    @contextlib.contextmanager
    def _queue_op(self) -> Iterator[None]:
        with self._errors():
            self._group()
            try:
                yield
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._grouped = False  # the next call makes it again
                    raise StoreUnavailable(f"the job queue in {self.url} was reset; try again", 1.0) from None
                raise

    # -- states, answers, cancels ---------------------------------------------------------------------------------

    def enqueue(self, job_id: str, record: bytes | None, state: dict[str, Any]) -> None:
        with self._queue_op():
            pipe = self.r.pipeline(transaction=True)
            pipe.set(self._key(job_id, "state"), json.dumps(state), ex=self._ttl)
            if record is not None:
                pipe.set(self._key(job_id, "record"), record, ex=self._ttl)
                pipe.xadd(self.queue_key, {"job": job_id})
            pipe.execute()

    def write_state(self, job_id: str, state: dict[str, Any]) -> None:
        key, answer, data = self._key(job_id, "state"), self._key(job_id, "answer"), json.dumps(state)

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(answer):
                return  # answered already (by another worker that took the job over): its state stays
            pipe.multi()
            pipe.set(key, data, ex=self._ttl)

        with self._errors():
            self.r.transaction(write, answer)  # WATCH the answer: written between the look and the SET, no SET

    def read_state_bytes(self, job_id: str) -> bytes | None:
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._errors():
            return self.r.get(self._key(job_id, "state"))

    def read_state(self, job_id: str) -> dict[str, Any] | None:
        data = self.read_state_bytes(job_id)
        return None if data is None else json.loads(data)

    def write_checkpoint(self, job_id: str, data: bytes) -> None:
        with self._errors():
            self.r.set(self._key(job_id, "ckpt"), data, ex=self._ttl)

    def in_queue(self, job_id: str) -> bool:
        with self._errors():
            return bool(self.r.exists(self._key(job_id, "record")))

    def write_result(self, job_id: str, state: dict[str, Any], outcome: Outcome) -> None:
        """The answer (``SET NX``: the first one wins), then its state, the bookkeeping of kept answers, the record
        and checkpoint gone and the queue's entry acknowledged and deleted, in one transaction; then the oldest
        answers go while the caps are exceeded."""
        state = {**state, "status": outcome.status, "content_type": outcome.content_type, "bytes": len(outcome.body)}
        keep = math.ceil(self.limits.keep_seconds)
        entry = self._entries.get(job_id)
        with self._queue_op():
            first = self.r.set(self._key(job_id, "answer"), outcome.body, ex=keep, nx=True)
            pipe = self.r.pipeline(transaction=True)
            if first:
                pipe.set(self._key(job_id, "state"), json.dumps(state), ex=keep)
                pipe.zadd(self.prefix + "done", {job_id: float(state.get("finished") or time.time())})
                pipe.hset(self.prefix + "sizes", job_id, len(outcome.body))
            pipe.delete(self._key(job_id, "record"), self._key(job_id, "ckpt"), self._key(job_id, "cancel"))
            if entry is not None:
                pipe.xack(self.queue_key, GROUP, entry)
                pipe.xdel(self.queue_key, entry)
            pipe.execute()
            self._entries.pop(job_id, None)
            if first:
                self._enforce_caps(job_id)

    def _enforce_caps(self, newest: str) -> None:
        done, sizes = self.prefix + "done", self.prefix + "sizes"
        expired = self.r.zrangebyscore(done, "-inf", time.time() - self.limits.keep_seconds)
        if expired:
            self.r.zrem(done, *expired)
            self.r.hdel(sizes, *expired)
        while True:
            count = self.r.zcard(done)
            total = sum(int(v) for v in self.r.hvals(sizes))
            if count <= self.limits.max_kept and total <= self.limits.max_kept_bytes:
                return
            oldest = self.r.zrange(done, 0, 0)
            if not oldest or oldest[0].decode() == newest:
                return  # the newest answer alone is over the bytes' cap: it stays until its expiry
            job_id = oldest[0].decode()
            pipe = self.r.pipeline(transaction=True)
            pipe.zrem(done, job_id)
            pipe.hdel(sizes, job_id)
            pipe.delete(self._key(job_id, "answer"), self._key(job_id, "state"))
            pipe.execute()

    def read_result(self, job_id: str) -> bytes | None:
        with self._errors():
            return self.r.get(self._key(job_id, "answer"))

    def request_cancel(self, job_id: str) -> None:
        with self._errors():
            self.r.set(self._key(job_id, "cancel"), b"1", ex=self._ttl)

    def cancelled(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        with self._errors():
            pipe = self.r.pipeline(transaction=False)
            for j in job_ids:
                pipe.exists(self._key(j, "cancel"))
            return {j for j, n in zip(job_ids, pipe.execute(), strict=True) if n}

    def remove(self, job_id: str) -> None:
        with self._errors():
            parts = ("state", "record", "ckpt", "cancel", "answer")
            self.r.delete(*(self._key(job_id, p) for p in parts))
            self.r.zrem(self.prefix + "done", job_id)
            self.r.hdel(self.prefix + "sizes", job_id)

    def sweep(self, now: float | None = None) -> int:
        """Answers expire by themselves; what is left: the bookkeeping of expired answers, and the consumers of
        workers gone long ago that hold no entry. Returns how many answers' bookkeeping went."""
        now = time.time() if now is None else now
        with self._queue_op():
            done, sizes = self.prefix + "done", self.prefix + "sizes"
            expired = self.r.zrangebyscore(done, "-inf", now - self.limits.keep_seconds)
            if expired:
                self.r.zrem(done, *expired)
                self.r.hdel(sizes, *expired)
            for c in self.r.xinfo_consumers(self.queue_key, GROUP):
                if c["pending"] == 0 and c["idle"] > 20_000 * self.limits.lease_seconds:
                    self.r.xgroup_delconsumer(self.queue_key, GROUP, c["name"])
            return len(expired)

    # -- the queue ------------------------------------------------------------------------------------------------

    def claim(self, consumer: str, takeover: bool, wait: float = 0.0) -> Claim | None:
        """A job whose worker stopped renewing its claim (``takeover``: ``XAUTOCLAIM``), else the next new one
        (``XREADGROUP``, waiting up to ``wait`` seconds for one)."""
        with self._queue_op():
            if takeover:
                start = "0-0"
                for _ in range(8):  # a few entries at most: each answered or expired one is cleaned up on the way
                    reply = self.r.xautoclaim(
                        self.queue_key, GROUP, consumer, int(self.limits.lease_seconds * 1000), start, count=1
                    )
                    start, entries = reply[0], reply[1]
                    for entry, fields in entries:
                        got = self._take(entry, fields)
                        if got is not None:
                            return got
                    if not entries or start in (b"0-0", "0-0"):
                        break
            block = int(wait * 1000) or None  # None: no BLOCK (BLOCK 0 would wait for ever)
            for _, entries in self.r.xreadgroup(GROUP, consumer, {self.queue_key: ">"}, count=1, block=block) or []:
                for entry, fields in entries:
                    got = self._take(entry, fields)
                    if got is not None:
                        return got
        return None

    def _take(self, entry: bytes, fields: dict | None) -> Claim | None:
        job_id = (fields or {}).get(b"job", b"").decode("ascii", "replace")
        if JOB_ID.fullmatch(job_id):
            pipe = self.r.pipeline(transaction=False)
            for part in ("state", "record", "ckpt"):
                pipe.get(self._key(job_id, part))
            state, record, ckpt = pipe.execute()
            state = json.loads(state) if state is not None else None
            if state is not None and record is not None and state.get("finished") is None:
                self._entries[job_id] = entry
                return Claim(job_id, record, ckpt, state)
        self.r.xack(self.queue_key, GROUP, entry)  # answered, expired or not ours: off the queue
        self.r.xdel(self.queue_key, entry)
        return None

    def renew(self, consumer: str, job_ids: list[str]) -> set[str]:
        """Reset the idle time of this worker's entries (``XCLAIM ... JUSTID``) after ``XPENDING`` showed that they
        are still its own; returns the jobs still its own (the others were taken over: the worker drops them)."""
        held = {j: self._entries[j] for j in job_ids if j in self._entries}
        if not held:
            return set()
        with self._queue_op():
            pending = self.r.xpending_range(
                self.queue_key, GROUP, "-", "+", count=len(held) + 64, consumername=consumer
            )
            mine = {p["message_id"] for p in pending}
            kept = {j for j, e in held.items() if e in mine}
            if kept:
                self.r.xclaim(self.queue_key, GROUP, consumer, 0, [held[j] for j in kept], justid=True)
        for j in set(held) - kept:
            self._entries.pop(j, None)
        return kept

    def release(self, consumer: str, job_id: str) -> None:
        """Give a job back unfinished (the worker stops): a new entry at the queue's end, the old one gone, so that
        the next worker with a free slot resumes it at once rather than after a lease."""
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return
        with self._queue_op():
            pipe = self.r.pipeline(transaction=True)
            pipe.xadd(self.queue_key, {"job": job_id})
            pipe.xack(self.queue_key, GROUP, entry)
            pipe.xdel(self.queue_key, entry)
            pipe.execute()

    def queue(self) -> QueueInfo:
        with self._queue_op():
            pipe = self.r.pipeline(transaction=False)
            pipe.xlen(self.queue_key)
            pipe.xpending(self.queue_key, GROUP)
            pipe.xinfo_consumers(self.queue_key, GROUP)
            length, pending, consumers = pipe.execute()
        alive = sum(1 for c in consumers if c["idle"] < 3000 * self.limits.lease_seconds)
        return QueueInfo(max(0, length - int(pending["pending"])), max(1, alive))
