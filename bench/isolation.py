"""Isolation of slow work under load: 3 clients send maximum-size optimizations back to back while 1 client sends
classify twice a second, for 60 s, against a private TorchServe on loopback (alexnet_viz, seeded random weights).

Each optimization client asks for the largest actmax there is (64 classes at 512 px, 2048 steps); the server
refuses it (422) with its estimate and the most steps that fit, and the client then submits exactly that (the
largest job the server admits, which runs until its compute budget is spent and answers early), polls it once a
second until the answer comes, and starts over. Reports classify p50/p99 latency, errors (5xx, and classify
answers other than 200), worker restarts (the worker's PID before and after, and TorchServe's worker list), and
every optimization's outcome.

Run: .venv/bin/python bench/isolation.py [--seconds 60] [--budget 10] [--out bench/results/isolation.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from scripts.local_torchserve import seeded_alexnet_server  # noqa: E402

MAX = {"mode": "actmax", "channel": "0-63", "size": "512", "steps": "2048"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--budget", type=int, default=10, help="compute seconds a job gets (archive.sh --max-busy-seconds)")
    p.add_argument("--rate", type=float, default=2.0, help="classify requests a second")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "isolation.json"))
    args = p.parse_args()
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
            k = 0
            while True:
                due = started + k / args.rate
                if due >= end:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                t0 = time.perf_counter()
                r = server.post(model, data=image, headers={"Content-Type": "image/jpeg"})
                with lock:
                    classify_ms.append((time.perf_counter() - t0) * 1000)
                count("classify", r.status_code)
                k += 1

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


if __name__ == "__main__":
    main()
