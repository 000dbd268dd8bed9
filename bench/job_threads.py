"""Classify latency in the request thread while an optimization job runs on the job thread, for the job thread's
torch intra-op threads (``job_threads``) of 1 and 2, against no job at all; in one process, AlexNet (seeded random
weights), without TorchServe. Also checks whether ``torch.set_num_threads`` in one thread changes another's.

Run: .venv/bin/python bench/job_threads.py [--requests 40] [--out bench/results/job_threads.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import build_model, random_state_dict, torchvision_spec  # noqa: E402
from vizserve import JobSettings, Limits, ServerConfig, VizService  # noqa: E402
from vizserve.loading import job_scheduler  # noqa: E402


def per_thread_setting() -> dict:
    seen = {"main_before": torch.get_num_threads()}

    def set_one() -> None:
        torch.set_num_threads(1)
        seen["thread_after_setting_1"] = torch.get_num_threads()

    t = threading.Thread(target=set_one)
    t.start()
    t.join()
    seen["main_after"] = torch.get_num_threads()
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "job_threads.json"))
    args = p.parse_args()
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    image = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()
    out: dict = {"cpus": torch.get_num_threads(), "set_num_threads": per_thread_setting()}
    request_default = torch.get_num_threads()
    for job_threads, request_threads in ((None, request_default), (None, 1), (1, request_default), (1, 1),
                                         (2, request_default)):  # fmt: skip
        torch.set_num_threads(request_threads)
        svc = VizService(model.eval(), torchvision_spec("alexnet"), device=torch.device("cpu"), name="alexnet_viz",
                         limits=replace(Limits(), job_threads=job_threads or 1))  # fmt: skip
        svc.jobs = job_scheduler(
            "alexnet_viz", ServerConfig(limits=svc.limits, jobs=JobSettings(dir=tempfile.mkdtemp()))
        )
        svc.handle([{"data": image}])  # warm
        if job_threads:
            [r] = svc.handle([{"mode": "actmax", "layer": "features.10", "channel": "0-7", "steps": "100"}])
            assert r.status == 202, r.body[:300]
            submitted = time.monotonic()
            time.sleep(3)
        ms = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            svc.handle([{"data": image}])
            ms.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.1)
        ms.sort()
        key = (f"job_threads={job_threads}" if job_threads else "no job") + f", request_threads={request_threads}"
        out[key] = {"p50_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * len(ms))], 1),
                    "max_ms": round(ms[-1], 1)}  # fmt: skip
        if job_threads:
            job = next(iter(svc.jobs._jobs.values()))
            out[key]["job_steps_per_s"] = round(job.work.done / (time.monotonic() - submitted), 2)
            svc.jobs.stop()
        print(key, out[key], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
