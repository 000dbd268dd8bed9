"""Activation maximization speed: 16 channels of one AlexNet layer, batched, against the seeds' plain loop.

Ours: the 16 targets as one batch (fft parameterization, transforms, Adam), forward stopped after the target
layer, in float32 and in bfloat16 (autocast). Plain loop: what the seed notebooks do, one target at a time: a zero
image on pixels, SGD, the whole network forward and backward each step. Same model (seeded random weights), size and
steps. Reports time per image, the ratio, and our FLOP rate (forward + backward at 224 px, counted by torch's
FlopCounterMode; the transforms' padding makes the real work about 11% more) against this machine's measured
matrix-multiply peak in the same precision.

Run: .venv/bin/python bench/actmax.py [--steps 128] [--size 224] [--layer features.10]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import Settings, Target, actmax, build_model, random_state_dict  # noqa: E402
from cnnviz.actmax import Objective  # noqa: E402

K = 16


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


def step_flops(model, layer: str, size: int) -> int:
    """FLOPs of one batched step of ours: forward to the layer and backward to the image."""
    x = torch.randn(K, 3, size, size, requires_grad=True)
    targets = [Target(layer, c) for c in range(K)]
    with FlopCounterMode(display=False) as counter, Objective(model, targets) as objective:
        objective(x).sum().backward()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--layer", default="features.10")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "actmax.json"))
    args = p.parse_args()
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)

    targets = [Target(args.layer, c) for c in range(K)]
    t0 = time.perf_counter()
    for c in range(K):
        plain_loop(model, args.layer, c, args.size, args.steps)
    plain = time.perf_counter() - t0
    flops = step_flops(model, args.layer, args.size) * args.steps
    out = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "layer": args.layer, "size": args.size, "steps": args.steps, "targets": K,
        "plain_loop_s_per_image": round(plain / K, 3),
        "flop_per_image_step_(ours,_224_px_without_padding)": flops // args.steps // K,
    }  # fmt: skip
    for precision, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        t0 = time.perf_counter()
        result = actmax(model, targets, Settings(size=args.size, steps=args.steps, precision=precision))
        ours = time.perf_counter() - t0
        peak = matmul_peak(dtype=dtype)
        out[precision] = {
            "ours_s_per_image": round(ours / K, 3),
            "speedup_over_plain_loop": round(plain / ours, 2),
            "ours_gflop_per_s": round(flops / ours / 1e9, 1),
            "matmul_peak_gflop_per_s": round(peak / 1e9, 1),
            "fraction_of_peak": round(flops / ours / peak, 3),
            "objective_start_mean": round(float(result.start.mean()), 4),
            "objective_end_mean": round(float(result.end.mean()), 4),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
