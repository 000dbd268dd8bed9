"""The job scheduler's own cost, by store (the folder, and a private redis-server on loopback: Debian's package,
started and stopped here): per step, fake jobs whose steps take no time (picking the job and its bookkeeping); per
second, the store's calls that run at their own pace whatever the steps' rate (progress, cancels, claims,
renewals, checkpoints). And a checkpoint of a real optimization (AlexNet, seeded random weights): its size and the
time to take it and to restore it.

Run: .venv/bin/python bench/job_store.py [--steps 3000] [--jobs 1 4] [--out bench/results/job_store.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from tests.jobfakes import make_work, record  # noqa: E402
from tests.redisserver import RedisServer  # noqa: E402
from vizserve.jobs import FolderStore, JobLimits, JobScheduler  # noqa: E402


def per_step(store, limits, jobs: int, steps: int) -> dict:
    sched = JobScheduler(store, limits, make_work=make_work(), thread=False)
    ids = [sched.submit(record(f"b{i}", steps // jobs), {"steps": steps // jobs})["job"] for i in range(jobs)]
    for _ in ids:  # every job taken before the clock starts (steps of no time would outrun the claims' pace)
        sched._try_claim(0.0)
    assert sched.active() == jobs
    t0 = time.perf_counter()
    units = 0
    while True:
        if sched.run_once():
            units += 1
        elif all(sched.poll(i).status != 202 for i in ids):
            break
    seconds = time.perf_counter() - t0
    sched.stop()
    answers = [json.loads(sched.poll(i).body) for i in ids]
    assert all(a["steps"] == steps // jobs for a in answers), answers
    return {"jobs": jobs, "steps": steps, "units": units, "seconds": round(seconds, 3),
            "us_per_step": round(seconds / steps * 1e6, 1)}  # fmt: skip


def per_second(store, limits, n: int = 300) -> dict:
    """The store's calls that run at a pace of their own while a job runs, whatever its steps' rate: each call's
    time, and what they cost a second at the scheduler's rates (a progress write a second with a 20 kB preview,
    5 looks for cancels, 2 for new jobs, a renewal every lease / 3, a 600 kB checkpoint every 5 s)."""
    sched = JobScheduler(store, limits, make_work=make_work(), thread=False)
    job = sched.submit(record("p", 10), {"steps": 10})["job"]
    sched._try_claim(0.0)
    state = {**json.loads(sched.poll(job).body), "preview": "x" * 20_000}
    ckpt = b"c" * 600_000

    def timed(fn, *a) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(*a)
        return (time.perf_counter() - t0) / n

    calls = {
        "write_state": (timed(store.write_state, job, state), 1.0),
        "cancelled": (timed(store.cancelled, [job]), 1 / sched.cancel_every),
        "claim": (timed(store.claim, sched.consumer, True, 0.0), 1 / sched.claim_every),
        "renew": (timed(store.renew, sched.consumer, [job]), 3 / limits.lease_seconds),
        "write_checkpoint": (timed(store.write_checkpoint, job, ckpt), 1 / limits.checkpoint_every),
    }
    sched.stop()
    out = {name: round(t * 1e6, 1) for name, (t, _) in calls.items()}
    out["ms_per_second"] = round(sum(t * rate for t, rate in calls.values()) * 1e3, 3)
    return out


def checkpoint_cost() -> dict:
    import torch

    from cnnviz import build_model, random_state_dict
    from cnnviz.actmax import Objective, Optimization, Settings, Target

    torch.set_num_threads(1)
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    model.eval()
    out = {}
    for k, size in ((1, 128), (8, 224)):
        cfg = Settings(size=size, steps=10)
        targets = [Target("", c) for c in range(k)]
        opt = Optimization(model, k, Objective(model, targets, cfg.classes), cfg)
        t0 = time.perf_counter()
        opt.step()
        step = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = opt.checkpoint()
        save = time.perf_counter() - t0
        opt.close()
        other = Optimization(model, k, Objective(model, targets, cfg.classes), cfg)
        t0 = time.perf_counter()
        other.restore(data)
        load = time.perf_counter() - t0
        other.close()
        out[f"{k} classes at {size} px"] = {
            "bytes": len(data), "save_ms": round(save * 1e3, 2), "restore_ms": round(load * 1e3, 2),
            "step_ms": round(step * 1e3, 1),
        }  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    # the defaults' rates: progress every second, a checkpoint every 5 s, renewals every 5 s
    limits = JobLimits(compute_seconds=1e6, wall_seconds=1e6)
    results: dict = {"folder": [], "redis": [], "checkpoint": checkpoint_cost(), "load": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in args.jobs:
            store = FolderStore(Path(tmp) / f"folder{jobs}", limits)
            results["folder"].append(per_step(store, limits, jobs, args.steps))
            store.close()
        store = FolderStore(Path(tmp) / "paced", limits)
        results["folder_paced_us"] = per_second(store, limits)
        store.close()
        if shutil.which("redis-server") is None:
            results["redis"] = "skipped: redis-server not installed (apt-get install redis-server)"
        else:
            from vizserve.redisstore import RedisStore

            server = RedisServer(Path(tmp) / "redis")
            server.start()
            try:
                for jobs in args.jobs:
                    store = RedisStore(server.url, f"bench{jobs}", limits)
                    results["redis"].append(per_step(store, limits, jobs, args.steps))
                    store.close()
                store = RedisStore(server.url, "paced", limits)
                results["redis_paced_us"] = per_second(store, limits)
                store.close()
            finally:
                server.stop()
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
