"""AlexNet's classes through clients/every_class.py on one replica, then on two sharing one Redis: the wall-time
ratio, and the scheduler's overhead per step; on paper, all 1000 classes on 8 GPUs.

Each replica is a private TorchServe (scripts/local_torchserve.py) serving alexnet_viz with seeded random weights
(seed 0), pinned to one core of its own (``taskset``), with ``VIZ_JOB_STORE`` naming one private redis-server on
loopback (Debian's package, started and stopped here). The one-replica run is replica A alone; then replica B
starts beside it and the same classes run again on both (``--servers A,B``: one job in flight a replica). Each run:
``--classes`` classes (``--batch`` a job, ``--steps`` steps, actmax's default size, 128 px), ``--repeat`` times
(medians).

Per job, from its final state in Redis: ``compute_s`` (its steps, checkpoints and final encoding, as the scheduler
counts them) and ``elapsed_s`` (submission to answer); the scheduler's overhead per step is ``(elapsed_s -
compute_s) / steps``: the time its worker spent on it outside its own work (picking it, progress writes with a
preview, looks for cancels and new jobs, lease renewals, the wait for its claim). A step's time on the server is
set beside the same step run in this process on one thread (``in_process``), and its FLOPs are counted
(``torch.utils.flop_counter``) for the estimate on paper. On a machine that others share, two cores may not give
two cores' worth: :func:`ceiling` measures what they give the same step just before each run, and the ratio is
also given over it (``efficiency``).

Run: .venv/bin/python bench/replicas.py [--classes 64] [--steps 32] [--batch 8] [--repeat 1]
     [--out bench/results/replicas.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from scripts.local_torchserve import local_torchserve, seeded_alexnet_archive  # noqa: E402
from tests.redisserver import MISSING, RedisServer  # noqa: E402

MODEL = "alexnet_viz"
CLIENT = ROOT / "clients" / "every_class.py"
# Published dense peaks (NVIDIA's H100 SXM datasheet): TF32 tensor cores (cuDNN's default for float32
# convolutions in torch), plain FP32.
H100_TF32, H100_FP32 = 494.7e12, 66.9e12
UTILIZATION = 0.3  # a guess for AlexNet at 128 px, batches of tens of images (docs/deploying.md's capacity model)
# A guess: the host's time to launch one operator of eager PyTorch on a GPU (dispatch and launch); a step that
# computes little is bound by its operators' count times this, whatever the GPU's peak.
LAUNCH_S = 10e-6
# The scheduler's own cost per step (picking the job, its bookkeeping): bench/job_store.py's upper end here.
SCHEDULER_STEP_S = 25e-6


def every_class(servers, out: Path, args, classes: int) -> float:
    """One run of clients/every_class.py over ``servers`` (``classes`` of them); its wall seconds."""
    cmd = [sys.executable, str(CLIENT), "--model", MODEL, "--servers", ",".join(s.url for s in servers),
           f"--token={','.join(s.key for s in servers)}", "--out", str(out), "--batch", str(args.batch),
           "--steps", str(args.steps), "--max-batches", str(math.ceil(classes / args.batch)),
           "--poll", str(args.poll), "--fresh"]  # fmt: skip
    t0 = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t0
    if run.returncode != 0:
        raise RuntimeError(f"every_class.py failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return wall


def jobs_of(out: Path, redis_url: str) -> list[dict]:
    """Each job of a run: its classes, worker, and its final state's figures (read from Redis)."""
    import redis

    m = json.loads((out / "manifest.json").read_text())
    r = redis.Redis.from_url(redis_url)
    jobs: dict[str, dict] = {}
    for e in m["classes"]:
        jobs.setdefault(e["job"], {"job": e["job"], "classes": 0, "worker": e.get("worker"), "steps": e["steps"]})
        jobs[e["job"]]["classes"] += 1
    for job in jobs.values():
        state = json.loads(r.get(f"viz:{MODEL}:job:{job['job']}:state"))
        job.update(compute_s=state["compute_s"], elapsed_s=state["elapsed_s"], resumed=state["resumed"],
                   overhead_ms_per_step=round((state["elapsed_s"] - state["compute_s"]) / state["steps"] * 1e3, 2),
                   overhead_share=round(1 - state["compute_s"] / state["elapsed_s"], 4),
                   step_ms=round(state["compute_s"] / state["steps"] * 1e3, 1))  # fmt: skip
    r.close()
    return list(jobs.values())


def summary(walls: list[float], jobs: list[dict], classes: int) -> dict:
    workers = sorted({j["worker"] for j in jobs if j["worker"]})
    return {
        "wall_s": round(statistics.median(walls), 1),
        "walls_s": [round(w, 1) for w in walls],
        "classes": classes,
        "jobs": len(jobs),
        "workers": workers,
        "step_ms_median": statistics.median(j["step_ms"] for j in jobs),
        "step_ms_by_worker": {w: statistics.median(j["step_ms"] for j in jobs if j["worker"] == w) for w in workers},
        "jobs_by_worker": {w: sum(j["worker"] == w for j in jobs) for w in workers},
        "overhead_ms_per_step_median": statistics.median(j["overhead_ms_per_step"] for j in jobs),
        "overhead_share_median": statistics.median(j["overhead_share"] for j in jobs),
        "resumed": sum(j["resumed"] for j in jobs),
    }


def in_process(batch: int, steps: int = 6) -> dict:
    """One actmax step of ``batch`` AlexNet classes at 128 px on one thread: its median time (after one), the
    FLOPs of one step and of one class-step, and the operators one step dispatches."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Ops(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    from cnnviz import build_model, random_state_dict
    from cnnviz.actmax import Objective, Optimization, Settings, Target

    torch.set_num_threads(1)
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    model.eval()
    cfg = Settings(size=128, steps=steps + 2)
    targets = [Target("", c) for c in range(batch)]
    opt = Optimization(model, batch, Objective(model, targets, cfg.classes), cfg)
    opt.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    with FlopCounterMode(display=False) as counter:
        opt.step()
    with Ops() as ops:
        opt.step()
    opt.close()
    flops = float(counter.get_total_flops())
    return {"step_ms": round(statistics.median(times) * 1e3, 1), "gflop_per_step": round(flops / 1e9, 2),
            "gflop_per_class_step": round(flops / batch / 1e9, 3), "ops_per_step": ops.count}  # fmt: skip


def ceiling(cores: list[int], batch: int) -> dict:
    """What two cores give this benchmark now, on a machine others share: :func:`in_process`'s step on
    ``cores[0]`` alone, then on both at once (a process each, pinned); the throughput of both over that of one
    (2.0: two cores' worth; less where other work or a shared physical core takes its part)."""

    def probe(core: int) -> subprocess.Popen:
        cmd = ["taskset", "-c", str(core), sys.executable, __file__, "--probe", str(batch)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def step_ms(proc: subprocess.Popen) -> float:
        out, _ = proc.communicate(timeout=600)
        return json.loads(out)["step_ms"]

    alone = step_ms(probe(cores[0]))
    both = [step_ms(p) for p in [probe(c) for c in cores[:2]]]
    return {"alone_ms": alone, "both_ms": both, "ceiling": round(alone * sum(1 / t for t in both), 2)}


def on_paper(gflop_per_class_step: float, ops: int, overhead_share: float, cpu_class_step_ms: float) -> dict:
    """All 1000 AlexNet classes, 128 steps each (every_class's default), on 8 GPUs (one replica each, batches
    of 64 classes, the most targets a request takes): an estimate. A step takes the longer of its FLOPs at
    :data:`UTILIZATION` of a published peak and its operators' launches (``ops`` x :data:`LAUNCH_S`), plus the
    scheduler's cost per step (:data:`SCHEDULER_STEP_S`); the scheduler's costs that run at their own pace
    (progress with a preview, looks for cancels and jobs, renewals, checkpoints, claims) take ``overhead_share``
    of a job's wall time, as measured here."""
    classes, steps, batch, gpus = 1000, 128, 64, 8
    jobs = math.ceil(classes / batch)
    job_steps_per_gpu = math.ceil(jobs / gpus) * steps
    launch_s = ops * LAUNCH_S
    out = {"classes": classes, "steps": steps, "batch": batch, "gpus": gpus, "jobs": jobs,
           "job_steps_per_gpu": job_steps_per_gpu, "utilization": UTILIZATION,
           "launch_ms_per_step": round(launch_s * 1e3, 2), "overhead_share": overhead_share}  # fmt: skip
    for name, peak in (("h100_tf32", H100_TF32), ("h100_fp32", H100_FP32)):
        flop_s = batch * gflop_per_class_step * 1e9 / (peak * UTILIZATION)
        step_s = (max(flop_s, launch_s) + SCHEDULER_STEP_S) / (1 - overhead_share)
        out[name] = {
            "flops_ms_per_step": round(flop_s * 1e3, 3),
            "step_ms": round(step_s * 1e3, 2),
            "seconds": round(job_steps_per_gpu * step_s, 1),
        }
    out["cpu_core_hours"] = round(classes * steps * cpu_class_step_ms / 1e3 / 3600, 1)  # the same work on CPUs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32, help="per class (every_class's default is 128)")
    ap.add_argument("--batch", type=int, default=8, help="classes a job")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--poll", type=float, default=0.5, help="every_class's seconds between polls")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--probe", type=int, help=argparse.SUPPRESS)  # in_process(batch) alone, for ceiling()
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(in_process(args.probe)))
        return
    if shutil.which("redis-server") is None:
        sys.exit(f"skipped: {MISSING}")
    if args.classes % args.batch:
        sys.exit("--classes must be a multiple of --batch (every job the same size)")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("needs 2 cores: each replica is pinned to one of its own")
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "load_before": os.getloadavg(),
        "in_process": in_process(args.batch),
    }
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        work = Path(tmp)
        seeded_alexnet_archive(work / "store")
        redis = RedisServer(work / "redis")
        redis.start()
        env = {"VIZ_JOB_STORE": redis.url}
        try:
            with ExitStack() as stack:
                replicas = []
                for name, core in (("one", cores[0]), ("two", cores[1])):
                    (work / name).mkdir()
                    cm = local_torchserve(work / "store", [f"{MODEL}.mar"], work / name, env=env, cpus=[core])
                    replicas.append(stack.enter_context(cm))  # "two": B beside A
                    # a warm-up (first steps, the cost model's first measures), a job a replica
                    every_class(replicas, work / f"warm_{name}", args, args.batch * len(replicas))
                    walls, jobs = [], []
                    results[f"ceiling_{name}"] = ceiling(cores, args.batch)  # the machine's share, now
                    for i in range(args.repeat):
                        out = work / f"{name}{i}"
                        walls.append(every_class(replicas, out, args, args.classes))
                        jobs += jobs_of(out, redis.url)
                    results[name] = summary(walls, jobs, args.classes)
        finally:
            redis.stop()
    one, two = results["one"], results["two"]
    results["ratio"] = round(one["wall_s"] / two["wall_s"], 2)
    # the ratio over what two cores gave the same step in this process at the time (1.0: the replicas used it all)
    results["efficiency"] = round(results["ratio"] / results["ceiling_two"]["ceiling"], 2)
    step = results["in_process"]
    results["on_paper"] = on_paper(step["gflop_per_class_step"], step["ops_per_step"],
                                   two["overhead_share_median"], step["step_ms"] / args.batch)  # fmt: skip
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
