"""Per-request cost of every mode, for the capacity model (docs/deploying.md): milliseconds on one CPU core and FLOPs.

In one process, without TorchServe (its own cost per request is in ``bench/latency.py``), on one thread
(``torch.set_num_threads(1)``: one worker per core is how a CPU replica scales). For each model (seeded random
weights: cost does not depend on the weights) and each mode with its defaults, on ``docs/grace_hopper.jpg``: the
median of ``--rounds`` timed requests after 2 warm-up ones, requests/s per core (1000 / ms), and the FLOPs of one
request counted by ``torch.utils.flop_counter`` (forward and backward passes; convolutions and matrix products).

Optimizations (actmax, invert) are jobs: their row is one request of the defaults as a job would run it
(submission to answer), with its steps counted, so a step costs ms / steps.

Run: .venv/bin/python bench/capacity.py [--models alexnet resnet18] [--rounds 3]  (about 10 minutes)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import CAM_METHODS, SALIENCY_METHODS, build_model, random_state_dict, torchvision_spec  # noqa: E402
from vizserve import Limits, VizService  # noqa: E402

IMAGE = ROOT / "docs" / "grace_hopper.jpg"
# (row, fields): each mode with its defaults, every attribution method by name; the photo is added to every row.
REQUESTS = [
    ("classify", {}),
    ("featuremaps", {"mode": "featuremaps"}),
    ("filters", {"mode": "filters"}),
    *((f"gradcam {m}", {"mode": "gradcam", "method": m}) for m in CAM_METHODS),
    ("gradcam, aug_smooth", {"mode": "gradcam", "aug_smooth": "true"}),
    ("gradcam, faithfulness", {"mode": "gradcam", "faithfulness": "true"}),
    *((f"saliency {m}", {"mode": "saliency", "method": m}) for m in SALIENCY_METHODS),
    ("deconv", {"mode": "deconv"}),
    ("actmax, one class (a job)", {"mode": "actmax", "channel": "0"}),
    ("invert (a job)", {"mode": "invert"}),
]
SLOW_MS = 2000  # a request slower than this is timed once (its warm-up) and its FLOPs are not counted


def service(arch: str) -> VizService:
    model = build_model(arch)
    model.load_state_dict(random_state_dict(arch, seed=0))
    limits = Limits(max_busy_seconds=100_000)  # the defaults in full, whatever this machine's speed
    return VizService(model.eval(), torchvision_spec(arch), device=torch.device("cpu"), name=f"{arch}_viz",
                      limits=limits)  # fmt: skip


class Refused(Exception):
    """A request answered with another status than 200 (a method the model cannot take: LRP on ResNet)."""


def one(svc: VizService, fields: dict, image: bytes) -> dict:
    """One request, answered in the calling thread (a service without a job scheduler runs optimizations inline)."""
    [reply] = svc.handle([{**fields, "data": image}])
    if reply.status != 200:
        try:
            message = json.loads(reply.body)["message"]
        except (ValueError, KeyError, TypeError):
            message = repr(reply.body[:300])
        raise Refused(f"{reply.status}: {message}")
    return json.loads(reply.body)


def steps_of(body: dict) -> int | None:
    for key in ("actmax", "invert"):
        if key in body:
            entries = body[key] if isinstance(body[key], list) else [body[key]]
            return entries[0].get("steps")
    return None


def measure(svc: VizService, fields: dict, image: bytes, rounds: int) -> tuple[float, float | None, int | None]:
    """Median ms of ``rounds`` requests, FLOPs of one, and the steps an optimization ran (else None). An
    optimization is warmed up and counted at 4 steps (its FLOPs scaled to the steps it runs), timed in full once;
    a request slower than ``SLOW_MS`` at its warm-up is timed by it alone, uncounted."""
    optimization = fields.get("mode") in ("actmax", "invert")
    probe = {**fields, "steps": "4"} if optimization else fields
    t0 = time.perf_counter()
    body = one(svc, probe, image)  # warm-up (and the shapes of a new layer)
    warm = (time.perf_counter() - t0) * 1000
    if warm > SLOW_MS and not optimization:
        return warm, None, None
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            one(svc, probe, image)
        counted: float | None = float(counter.get_total_flops())
    except Refused:  # guided backprop's ReLU hooks and the counter's module hooks do not mix (a 500 under it)
        counted = None
    ms = []
    for _ in range(1 if optimization else rounds):
        t0 = time.perf_counter()
        body = one(svc, fields, image)
        ms.append((time.perf_counter() - t0) * 1000)
    steps = steps_of(body)
    flops = None if counted is None else counted * (steps / 4 if optimization and steps else 1)
    return statistics.median(ms), flops, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["alexnet", "resnet18"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "capacity.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    image = IMAGE.read_bytes()
    rows = []
    for arch in args.models:
        svc = service(arch)
        for name, fields in REQUESTS:
            try:
                ms, flops, steps = measure(svc, fields, image, args.rounds)
            except Refused as refused:  # a method the model cannot take (LRP on ResNet's shared ReLU)
                rows.append({"model": arch, "request": name, "refused": str(refused)[:200]})
                print(json.dumps(rows[-1]), flush=True)
                continue
            gflop = None if flops is None else round(flops / 1e9, 2)
            rows.append({"model": arch, "request": name, "ms_one_core": round(ms, 1),
                         "requests_per_s_per_core": round(1000 / ms, 2), "gflop": gflop, "steps": steps})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    out = {"machine": f"{platform.machine()}, 1 thread, {platform.processor() or 'cpu'}", "torch": torch.__version__,
           "image": IMAGE.name, "rows": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(table(rows, args.models))


def table(rows: list[dict], models: list[str]) -> str:
    """docs/deploying.md's table: a row per request, for each model its time on one core (requests/s) and GFLOP."""

    def cells(r: dict | None) -> str:
        if r is None:
            return "- | -"
        if "refused" in r:
            return f"refused: {r['refused']} | -"
        ms = r["ms_one_core"]
        t = f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"
        gflop = "-" if r["gflop"] is None else f"{r['gflop']:g}"
        return f"{t} ({r['requests_per_s_per_core']:g}/s) | {gflop}"

    by_request: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_request.setdefault(r["request"], {})[r["model"]] = r
    head = "| request | " + " | ".join(f"{m}: time on one core (requests/s) | GFLOP" for m in models) + " |"
    lines = [head, "|---" * (1 + 2 * len(models)) + "|"]
    for name, by_model in by_request.items():
        lines.append(f"| {name} | " + " | ".join(cells(by_model.get(m)) for m in models) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
