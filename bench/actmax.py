"""Activation maximization speed at the service's defaults, on AlexNet: one class, 16 classes, one channel and 16
channels of ``features.10``, against the seeds' plain loop.

Ours: exactly what ``mode=actmax`` runs with its defaults (128 steps, at most 128 px, 2 transformed copies a step,
fft parameterization, Adam, bfloat16 where the CPU computes it natively), all targets of a request as one batch,
the forward pass stopped after the target layer. Plain loop: what the seed notebooks do, one target at a time: a
zero image on pixels, SGD, the whole network forward and backward each step, float32, same size and steps (timed on
4 targets; per image). Reports seconds per image, the speedup, and our FLOP rate (forward and backward of one step,
copies included, counted by torch's FlopCounterMode on the step itself; median step time after a warm-up) against
this machine's matrix-multiply peak in the same precision (best of 20 products of 4096 x 4096 matrices).

Run: .venv/bin/python bench/actmax.py
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

from cnnviz import build_model, random_state_dict, torchvision_spec  # noqa: E402
from vizserve import VizService  # noqa: E402
from vizserve.modes import MODES  # noqa: E402
from vizserve.request import parse_request  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 20, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of ``n x n`` matrix multiplication in ``dtype``, best of ``repeats``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def plain_loop(model, layer: str, channel: int, size: int, steps: int, frames: int | None = None) -> None:
    """The seeds' loop: SGD on pixels from zeros, the whole network each step, one target (a clip of ``frames``
    for a video model, as the seeds' 3-D ResNet notebook does)."""
    module = dict(model.named_modules())[layer]
    x = torch.zeros(1, 3, *((frames,) if frames else ()), size, size, requires_grad=True)
    opt = torch.optim.SGD([x], lr=1.0)
    store = {}
    handle = module.register_forward_hook(lambda m, a, o: store.__setitem__("out", o.clone()))
    try:
        for _ in range(steps):
            opt.zero_grad()
            model(x)
            (-store["out"][0, channel].mean()).backward()
            opt.step()
    finally:
        handle.remove()


def service() -> VizService:
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    return VizService(model.eval(), torchvision_spec("alexnet"), device=torch.device("cpu"), name="alexnet_viz")


def ours(svc: VizService, fields: dict) -> dict:
    """The request's optimization as the service sets it up, run to the end: wall time, median step, FLOPs a step."""
    served = svc.served
    values = parse_request({"mode": "actmax", **fields}, served).values["actmax"]
    mode = MODES["actmax"]
    warm = mode.start(served, values, None)
    for _ in range(12):  # the first steps of a process (and of a new batch shape) are slower on a CPU
        warm.step()
    with FlopCounterMode(display=False) as counter:
        warm.step()
    warm.close()
    t0 = time.perf_counter()
    opt = mode.start(served, values, None)
    steps = []
    while not opt.finished:
        s0 = time.perf_counter()
        opt.step()
        steps.append(time.perf_counter() - s0)
    result = opt.finish(False)
    total = time.perf_counter() - t0
    k = len(values["targets"])
    return {
        "images": k, "size": values["size"], "steps": len(steps), "copies": values["copies"],
        "precision": opt.cfg.precision, "seconds": round(total, 2), "s_per_image": round(total / k, 3),
        "median_step_s": round(statistics.median(steps), 4),
        "gflop_per_step": round(counter.get_total_flops() / 1e9, 2),
        "end_mean": round(float(result.end.mean()), 4),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "actmax.json"))
    args = p.parse_args()
    svc = service()
    for param in svc.model.parameters():
        param.requires_grad_(False)
    peaks = {name: matmul_peak(4096, dtype=dtype) for name, dtype in (("float32", torch.float32),
                                                                        ("bfloat16", torch.bfloat16))}  # fmt: skip
    out: dict = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
        "matmul_peak_gflop_per_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
    }  # fmt: skip
    cases = {
        "1 class": ({"channel": "1"}, "classifier.6"),
        "16 classes": ({"channel": "0-15"}, "classifier.6"),
        "1 channel of features.10": ({"layer": "features.10", "channel": "1"}, "features.10"),
        "16 channels of features.10": ({"layer": "features.10", "channel": "0-15"}, "features.10"),
    }
    plain: dict[str, float] = {}
    for name, (fields, layer) in cases.items():
        run = ours(svc, fields)
        if layer not in plain:
            t0 = time.perf_counter()
            for c in range(4):
                plain_loop(svc.model, layer, c, run["size"], run["steps"])
            plain[layer] = (time.perf_counter() - t0) / 4
        rate = run["gflop_per_step"] * 1e9 / run["median_step_s"]
        out[name] = {
            **run, "plain_loop_s_per_image": round(plain[layer], 3),
            "speedup_over_plain_loop": round(plain[layer] / run["s_per_image"], 2),
            "gflop_per_s": round(rate / 1e9, 1), "fraction_of_peak": round(rate / peaks[run["precision"]], 3),
        }  # fmt: skip
        print(name, json.dumps(out[name]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
