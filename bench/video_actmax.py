"""Preferred videos: the cost of one step and of one preferred video for R3D-18 at 16 x 112 x 112, on this machine.

One class target of ``r3d_18`` (seeded random weights: the cost does not depend on the weights), the service's
defaults for video models (3-D Fourier parameterization, transforms at robustness 2, 2 transformed copies a step,
time jitter 4, margin objective, Adam), float32 and bfloat16 side by side, steps timed after a warm-up, median of
the steps. Also counts the FLOPs of one forward + backward (torch's
FlopCounterMode) and divides by a GPU's dense peak for the "on paper" figure; the MotionNet example (6 classes,
16 x 64 x 64) for scale.

Run: .venv/bin/python bench/video_actmax.py [--steps 12] [--out bench/results/video_actmax.json]
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

from bench.actmax import plain_loop  # noqa: E402
from cnnviz import Settings, Target, actmax, build_model, random_state_dict  # noqa: E402
from cnnviz.actmax import Objective  # noqa: E402

KINETICS = dict(mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989))
# Dense peaks from the vendors' data sheets (no sparsity), FLOP/s.
GPU_PEAK = {"A100 bf16": 312e12, "H100 SXM bf16": 989e12, "A100 fp32 (TF32)": 156e12}
# What these models reach of that peak on convolutions, for the paper estimate: a guess, stated as one.
GPU_EFFICIENCY = 0.3
COPIES = 2  # the service's default for video models, with margin, robustness 2 and time jitter 4


def step_times(model, k: int, size: int, frames: int, steps: int, precision: str, norm: dict) -> list[float]:
    times: list[float] = []
    last = [time.perf_counter()]

    def progress(step, values, images):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    cfg = Settings(size=size, frames=frames, steps=steps, precision=precision, time_jitter=4, strength=2.0,
                   copies=COPIES, classes="margin", **norm)  # fmt: skip
    last[0] = time.perf_counter()
    actmax(model, [Target("", c) for c in range(k)], cfg, progress)
    return times[2:]  # the first steps warm up allocators and kernels


def plain_step_s(model, layer: str, size: int, frames: int, steps: int) -> float:
    """Seconds a step of the seeds' loop takes, for one target (after 2 warm-up steps)."""
    plain_loop(model, layer, 0, size, 2, frames)
    t0 = time.perf_counter()
    plain_loop(model, layer, 0, size, steps, frames)
    return (time.perf_counter() - t0) / steps


def flops_per_step(model, k: int, size: int, frames: int) -> int:
    """Forward and backward to the input only (the loop freezes the weights), times the copies a step."""
    x = torch.randn(k, 3, frames, size, size, requires_grad=True)
    objective = Objective(model, [Target("", c) for c in range(k)])
    for p in model.parameters():
        p.requires_grad_(False)
    with FlopCounterMode(display=False) as counter, objective:
        objective(x).sum().backward()
    return COPIES * counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "video_actmax.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    r3d = build_model("r3d_18")
    r3d.load_state_dict(random_state_dict("r3d_18", seed=0))
    r3d.eval()
    from examples.motion.model import MotionNet

    motion = MotionNet()
    motion.load_state_dict(torch.load(ROOT / "examples" / "motion" / "weights.pt", weights_only=True))
    motion.eval()
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                 "torch": torch.__version__, "steps_timed": args.steps - 2, "cases": []}  # fmt: skip
    shapes_norm = dict(mean=(0.5,) * 3, std=(0.25,) * 3)
    cases = [("r3d_18", r3d, "fc", 1, 112, 16, KINETICS), ("motion", motion, "classifier", 6, 64, 16, shapes_norm)]
    for name, model, output, k, size, frames, norm in cases:
        plain = plain_step_s(model, output, size, frames, max(2, args.steps - 2))
        flops = flops_per_step(model, k, size, frames)
        for precision in ("float32", "bfloat16"):
            times = step_times(model, k, size, frames, args.steps, precision, norm)
            median = statistics.median(times)
            case = {
                "model": name, "targets": k, "clip": [frames, size, size], "precision": precision,
                "step_s": round(median, 3), "video_256_steps_s": round(256 * median, 1),
                "gflop_per_step": round(flops / 1e9, 1), "cpu_tflops": round(flops / median / 1e12, 3),
                "gpu_on_paper_256_steps_s": {g: round(256 * flops / (peak * GPU_EFFICIENCY), 2)
                                             for g, peak in GPU_PEAK.items()},
                "plain_loop_step_s": round(plain, 3), "plain_loop_256_steps_per_video_s": round(256 * plain, 1),
                "speedup_per_video_over_plain_loop": round(plain * k / median, 2),
            }  # fmt: skip
            out["cases"].append(case)
            print(json.dumps(case), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
