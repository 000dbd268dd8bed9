"""Fake jobs that are records (for the schedulers and stores of vizserve.jobs) and a worker process that runs them.

A record is JSON ``{"name", "steps", "cost"}``; its work counts steps and sums their numbers (``total``), so an
answer proves every step ran exactly once, in order, across checkpoints and takeovers: ``total == steps * (steps +
1) / 2``. ``cost``: seconds a step takes (slept, or added to a fake clock).

``python -m tests.jobfakes STORE MODEL LEASE CHECKPOINT_EVERY``: a worker (its scheduler thread takes jobs from the
store) that prints ``ready`` and runs until it is killed.
"""

from __future__ import annotations

import json
import sys
import time

from vizserve.jobs import JobLimits, JobScheduler, Outcome, make_store


def record(name: str, steps: int, cost: float = 0.0) -> bytes:
    return json.dumps({"name": name, "steps": steps, "cost": cost}).encode()


class CountingWork:
    made: list[CountingWork] = []  # every work made in this process, newest last

    def __init__(self, spec: dict, checkpoint: bytes | None, clock=None) -> None:
        self.name, self.steps, self.cost, self.clock = spec["name"], int(spec["steps"]), float(spec["cost"]), clock
        self.reserve_s, self.first_step_s = 0.0, max(self.cost, 1e-3)
        self.done, self.total, self.started, self.closed = 0, 0, False, False
        self.restored_at = None
        self.facts: dict = {}
        if checkpoint is not None:
            c = json.loads(checkpoint)
            self.done, self.total, self.restored_at = c["done"], c["total"], c["done"]
        CountingWork.made.append(self)

    def step(self) -> None:
        if not self.started:
            self.started = True
            return
        if self.clock is not None:
            self.clock.t += self.cost
        elif self.cost:
            time.sleep(self.cost)
        self.done += 1
        self.total += self.done

    def checkpoint(self) -> bytes:
        return json.dumps({"done": self.done, "total": self.total}).encode()

    def finish(self, stopped_early: bool) -> Outcome:
        body = {"name": self.name, "steps": self.done, "total": self.total, "stopped_early": stopped_early,
                "restored_at": self.restored_at, **self.facts}  # fmt: skip
        return Outcome(200, "application/json", json.dumps(body).encode())

    def progress(self) -> dict:
        return {"objective": [self.done]}

    def preview(self) -> bytes | None:
        return None

    def close(self) -> None:
        self.closed = True


def make_work(clock=None):
    """``make_work`` for :class:`JobScheduler`: a :class:`CountingWork` from a record and its last checkpoint."""
    return lambda rec, ckpt: CountingWork(json.loads(rec), ckpt, clock)


def main(argv: list[str]) -> None:
    spec, model, lease, every = argv[0], argv[1], float(argv[2]), float(argv[3])
    limits = JobLimits(lease_seconds=lease, checkpoint_every=every, progress_every=0.1)
    JobScheduler(make_store(spec, model, limits), limits, make_work=make_work())
    print("ready", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1:])
