"""Isolation of slow work under load, against a private TorchServe on loopback, in two scenarios (``--scenario``):

- ``actmax`` (alexnet_viz, seeded random weights): 3 clients send maximum-size optimizations back to back while 1
  client sends classify twice a second, for 60 s. Each asks for the largest actmax there is (64 classes at 512 px,
  2048 steps); the server refuses it (422) with its estimate and the most steps that fit, and the client then
  submits exactly that (the largest job the server admits, which runs until its compute budget is spent and answers
  early), polls it once a second until the answer comes, and starts over.
- ``heavy`` (alexnet_viz and motion_viz, issue 21): 8 clients send the heaviest inputs and modes there are back to
  back (thin animated GIFs and APNGs, integrated gradients with 128 steps and SmoothGrad with 64 samples of a
  64-frame clip, Score-CAM and occlusion of a photo, a 16-frame DCI 4K H.264 clip, every mode at once) while 1
  client classifies twice a second, alternating the two models, for 60 s. A 202 is polled once a second to its
  answer, a 429 waits its Retry-After, anything else is counted. The workers' resident memory is sampled four times a
  second against what it was idle.

Reports classify p50/p99 latency, errors (5xx, and classify answers other than 200), worker restarts (the workers'
PIDs before and after, and TorchServe's worker list), and every heavy request's outcome.

Run: .venv/bin/python bench/isolation.py [--scenario heavy] [--seconds 60] [--budget 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from scripts.local_torchserve import seeded_alexnet_server  # noqa: E402

MAX = {"mode": "actmax", "channel": "0-63", "size": "512", "steps": "2048"}


def paced(started: float, end: float, rate: float):
    """0, 1, 2, ...: each at its time, ``started + k / rate`` (monotonic seconds), while that is before ``end``."""
    k = 0
    while (due := started + k / rate) < end:
        time.sleep(max(0.0, due - time.monotonic()))
        yield k
        k += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=("actmax", "heavy"), default="actmax")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--budget", type=int, default=10, help="compute seconds a job gets (archive.sh --max-busy-seconds)")
    p.add_argument("--rate", type=float, default=2.0, help="classify requests a second")
    p.add_argument("--clients", type=int, default=8, help="heavy: clients sending heavy requests")
    p.add_argument("--out", default=None, help="default bench/results/isolation[_heavy].json")
    args = p.parse_args()
    args.out = args.out or str(
        ROOT / "bench" / "results" / f"isolation{'_heavy' if args.scenario == 'heavy' else ''}.json"
    )
    if args.scenario == "heavy":
        return heavy(args)
    image = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()
    lock = threading.Lock()
    statuses: dict[str, dict[int, int]] = {"classify": {}, "submit": {}, "poll": {}}
    classify_ms: list[float] = []
    outcomes: list[dict] = []

    def count(kind: str, code: int) -> None:
        with lock:
            statuses[kind][code] = statuses[kind].get(code, 0) + 1

    with seeded_alexnet_server("bench_isolation_", ["--max-busy-seconds", str(args.budget)]) as server:
        model = "alexnet_viz"
        pids_before = server.worker_pids(model)
        started = time.monotonic()
        end = started + args.seconds

        def classify() -> None:
            for _ in paced(started, end, args.rate):
                t0 = time.perf_counter()
                r = server.post(model, data=image, headers={"Content-Type": "image/jpeg"})
                with lock:
                    classify_ms.append((time.perf_counter() - t0) * 1000)
                count("classify", r.status_code)

        def optimizer(n: int) -> None:
            while time.monotonic() < end:
                fields = dict(MAX)
                r = server.post(model, data=fields)
                count("submit", r.status_code)
                while r.status_code == 422 and time.monotonic() < end:  # the largest job that is admitted
                    fit = r.json().get("max_steps", 0)
                    if fit >= 1:
                        fields["steps"] = str(fit)
                    else:
                        fields["size"] = str(int(fields["size"]) // 2)
                    r = server.post(model, data=fields)
                    count("submit", r.status_code)
                if r.status_code == 429:
                    time.sleep(float(r.json().get("retry_after_s", 1)))
                    continue
                if r.status_code != 202:
                    outcomes.append({"client": n, "status": r.status_code, "body": r.text[:200]})
                    continue
                first = r.json()
                t0 = time.monotonic()
                while True:  # polls go on after the 60 s: the job's answer is part of the outcome
                    time.sleep(1)
                    r = server.post(model, data={"job": first["job"]})
                    count("poll", r.status_code)
                    if r.status_code != 202:
                        break
                    last = r.json()
                outcome = {"client": n, "fields": {k: fields[k] for k in ("channel", "size", "steps")},
                           "estimate_s": first["estimate_s"], "status": r.status_code,
                           "seconds_to_answer": round(time.monotonic() - t0, 1)}  # fmt: skip
                if r.status_code == 200:
                    entry = r.json()["actmax"][0]
                    outcome.update(steps=entry["steps"], stopped_early=entry["stopped_early"],
                                   optimization_s=entry["seconds"], compute_s=last.get("compute_s"))  # fmt: skip
                else:
                    outcome["body"] = r.text[:200]
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=classify)] + [
            threading.Thread(target=optimizer, args=(n,)) for n in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.seconds + 600)
        pids_after = server.worker_pids(model)
        log = (server.workdir / "logs" / "model_log.log").read_text(errors="replace")
        worker_starts = log.count("Torch worker started.")

    lat = sorted(classify_ms)
    server_errors = sum(n for kind in statuses.values() for code, n in kind.items() if code >= 500)
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs (shared)",
        "seconds": args.seconds,
        "job_budget_s": args.budget,
        "classify": {
            "requests": len(lat),
            "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "max_ms": round(lat[-1], 1),
            "statuses": statuses["classify"],
        },
        "submissions": statuses["submit"],
        "polls": statuses["poll"],
        "server_errors": server_errors,
        "worker_pids": {"before": pids_before, "after": pids_after},
        "worker_restarts": (pids_before != pids_after) + max(0, worker_starts - len(pids_before)),
        "optimizations": outcomes,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


# -- the heavy scenario (issue 21) -----------------------------------------------------------------------------


def heavy_inputs() -> dict[str, tuple[str, dict]]:
    """Kind -> (model, fields): the heaviest inputs and modes a client can send."""
    import io

    import numpy as np

    from tests.edge.test_video import animated, square_frames, video

    rng = np.random.default_rng(0)
    thin = rng.integers(0, 256, (16, 1, 20_000, 3), dtype=np.uint8)  # 16 frames of 20,000 x 1: a few KB
    buf = io.BytesIO()
    np.save(buf, rng.normal(size=(3, 64, 64, 64)).astype(np.float32))
    clip64 = buf.getvalue()  # a 64-frame clip, 3 MB
    photo = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()
    uhd = video("MP4", square_frames(16, 4096, 2160), fps=15)  # 16 frames of DCI 4K
    return {
        "thin animated GIF (16 x 20000x1)": ("motion_viz", {"data": animated("GIF", thin, ms=50), "mode": "classify"}),
        "thin APNG (16 x 20000x1)": ("motion_viz", {"data": animated("PNG", thin, ms=50), "mode": "gradcam"}),
        "integrated gradients, 128 steps, 64 frames": (
            "motion_viz", {"data": clip64, "mode": "saliency", "method": "integrated_gradients", "ig_steps": "128"}),
        "SmoothGrad, 64 samples, 64 frames": (
            "motion_viz", {"data": clip64, "mode": "saliency", "method": "smoothgrad", "samples": "64"}),
        "Score-CAM of a photo (256 channels)": (
            "alexnet_viz", {"data": photo, "mode": "gradcam", "method": "scorecam"}),
        "occlusion of a photo (576 patches)": (
            "alexnet_viz", {"data": photo, "mode": "saliency", "method": "occlusion", "window": "0.08"}),
        "DCI 4K H.264 clip, 16 frames, classify + Grad-CAM": ("motion_viz", {"data": uhd, "mode": "gradcam"}),
        "every mode at once, 64 frames": (
            "motion_viz", {"data": clip64, "mode": "classify,featuremaps,gradcam,saliency,deconv",
                           "method": "integrated_gradients"}),
    }  # fmt: skip


def heavy(args) -> None:
    import tempfile

    import numpy as np
    import torch

    from cnnviz import random_state_dict
    from scripts.local_torchserve import local_torchserve

    inputs = heavy_inputs()
    photo = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()
    buf = __import__("io").BytesIO()
    np.save(buf, np.zeros((3, 16, 64, 64), np.float32))
    small_clip = buf.getvalue()
    lock = threading.Lock()
    statuses: dict[str, dict[int, int]] = {}
    classify_ms: dict[str, list[float]] = {"alexnet_viz": [], "motion_viz": []}
    outcomes: list[dict] = []
    rss: dict[int, list[int]] = {}
    timeline: list[tuple] = []  # (s from the start, model, ms, status) of each classify

    def count(kind: str, code: int) -> None:
        with lock:
            statuses.setdefault(kind, {})
            statuses[kind][code] = statuses[kind].get(code, 0) + 1

    with tempfile.TemporaryDirectory(prefix="bench_heavy_") as tmp:
        work = Path(tmp)
        weights = work / "alexnet_seeded.pt"
        torch.save(random_state_dict("alexnet", seed=0), weights)
        store = str(work / "store")
        budget = ["--max-busy-seconds", str(args.budget)]
        subprocess.run([str(ROOT / "archive.sh"), "--weights", str(weights), "--out", store, *budget, "alexnet"],
                       check=True)  # fmt: skip
        subprocess.run([str(ROOT / "archive.sh"), "--out", store, *budget, "motion"], check=True)
        with local_torchserve(work / "store", ["alexnet_viz.mar", "motion_viz.mar"], work) as server:
            models = ("alexnet_viz", "motion_viz")
            for m in models:  # warm: the first request of a shape builds its kernels
                server.post(m, data=photo if m == "alexnet_viz" else small_clip)
            pids_before = {m: server.worker_pids(m) for m in models}
            procs = {pid: psutil.Process(pid) for m in models for pid in pids_before[m]}
            idle = {pid: min(p.memory_info().rss for _ in range(8) if not time.sleep(0.25)) for pid, p in procs.items()}
            started = time.monotonic()
            end = started + args.seconds
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    for pid, proc in procs.items():
                        try:
                            value = proc.memory_info().rss
                        except psutil.Error:
                            continue
                        with lock:
                            rss.setdefault(pid, []).append(value)
                    time.sleep(0.25)

            def classify() -> None:
                for k in paced(started, end, args.rate):
                    model = models[k % 2]
                    t0 = time.perf_counter()
                    r = server.post(model, data=photo if model == "alexnet_viz" else small_clip)
                    ms = (time.perf_counter() - t0) * 1000
                    with lock:
                        classify_ms[model].append(ms)
                        timeline.append((round(time.monotonic() - started, 2), model, round(ms, 1), r.status_code))
                    count("classify", r.status_code)

            def client(n: int) -> None:
                kind = list(inputs)[n % len(inputs)]
                model, fields = inputs[kind]
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    r = server.post(model, files={k: (k, v) if isinstance(v, bytes) else (None, v)
                                                  for k, v in fields.items()})  # fmt: skip
                    count("heavy", r.status_code)
                    outcome = {"kind": kind, "status": r.status_code, "at": round(t0 - started, 2),
                               "answered_in_ms": round((time.monotonic() - t0) * 1000, 1)}  # fmt: skip
                    if r.status_code == 202:
                        first = r.json()
                        outcome["estimate_s"] = first.get("estimate_s")
                        while True:  # polls go on after the 60 s: the job's answer is part of the outcome
                            time.sleep(1)
                            r = server.post(model, data={"job": first["job"]})
                            count("poll", r.status_code)
                            if r.status_code != 202:
                                break
                        outcome.update(answer=r.status_code, seconds_to_answer=round(time.monotonic() - t0, 1))
                    elif r.status_code == 429:
                        time.sleep(min(float(r.headers.get("Retry-After", 1)), max(0.0, end - time.monotonic())))
                    else:
                        outcome["message"] = r.text[:160]
                        time.sleep(0.5)  # a refusal: the next one, soon (back to back, not a busy loop)
                    with lock:
                        outcomes.append(outcome)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            threads = [threading.Thread(target=classify)] + [
                threading.Thread(target=client, args=(n,)) for n in range(args.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=args.seconds + 900)
            stop.set()
            sampler.join(timeout=5)
            pids_after = {m: server.worker_pids(m) for m in models}
            log = (server.workdir / "logs" / "model_log.log").read_text(errors="replace")
            worker_starts = log.count("Torch worker started.")

    def latency(values: list[float]) -> dict:
        lat = sorted(values)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        return {"requests": len(lat), "p50_ms": round(statistics.median(lat), 1), "p99_ms": round(p99, 1),
                "max_ms": round(lat[-1], 1)}  # fmt: skip

    by_kind: dict[str, dict] = {}
    for o in outcomes:
        k = by_kind.setdefault(o["kind"], {"statuses": {}, "answers": {}, "seconds_to_answer": []})
        k["statuses"][o["status"]] = k["statuses"].get(o["status"], 0) + 1
        if "answer" in o:
            k["answers"][o["answer"]] = k["answers"].get(o["answer"], 0) + 1
            k["seconds_to_answer"].append(o["seconds_to_answer"])
        if "message" in o:
            k.setdefault("message", o["message"])
    server_errors = sum(n for kind in statuses.values() for code, n in kind.items() if code >= 500)
    growth = {str(pid): round((max(v) - idle[pid]) / 2**20, 1) for pid, v in rss.items()}
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs",
        "scenario": "heavy", "seconds": args.seconds, "job_budget_s": args.budget, "clients": args.clients,
        "classify": {m: latency(v) for m, v in classify_ms.items()},
        "classify_statuses": statuses.get("classify", {}),
        "statuses": statuses,
        "server_errors": server_errors,
        "worker_pids": {"before": pids_before, "after": pids_after},
        "worker_restarts": (pids_before != pids_after) + max(0, worker_starts - sum(map(len, pids_before.values()))),
        "rss_over_idle_mb": growth,
        "rss_idle_mb": {str(pid): round(v / 2**20, 1) for pid, v in idle.items()},
        "heavy": by_kind,
        "classify_timeline": timeline,
        "heavy_timeline": [(o["at"], o["kind"], o["status"], o["answered_in_ms"]) for o in outcomes],
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
