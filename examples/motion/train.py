"""Train MotionNet on freshly generated clips; deterministic for a seed, a few minutes on 2 CPU cores.

Run: .venv/bin/python examples/motion/train.py [--seed 0] [--steps 1500] [--out examples/motion/weights.pt]
Prints the accuracy on 1,000 newly generated clips (a seed never used in training).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from examples.motion.model import MotionNet  # noqa: E402
from examples.motion.motion_data import make_clips, normalize  # noqa: E402

TEST_SEED = 10_000_000  # training batches use seeds seed * 100_000 + step, far below this


def accuracy(model: torch.nn.Module, n: int = 1000, seed: int = TEST_SEED, batch: int = 100) -> float:
    correct = 0
    with torch.inference_mode():
        for i in range(0, n, batch):
            clips, labels, _ = make_clips(min(batch, n - i), seed + i)
            correct += (model(normalize(clips)).argmax(1) == labels).sum().item()
    return correct / n


def train(seed: int = 0, steps: int = 1500, batch: int = 16, lr: float = 5e-3, log_every: int = 50) -> MotionNet:
    torch.manual_seed(seed)
    model = MotionNet().train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for step in range(steps):
        clips, labels, _ = make_clips(batch, seed * 100_000 + step)
        loss = F.cross_entropy(model(normalize(clips)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step:5d}  loss {loss.item():.3f}", flush=True)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--out", default=str(HERE / "weights.pt"))
    args = p.parse_args()
    t0 = time.perf_counter()
    model = train(args.seed, args.steps)
    seconds = time.perf_counter() - t0
    acc = accuracy(model)
    torch.save(model.state_dict(), args.out)
    print(f"trained in {seconds:.0f} s; accuracy on 1,000 new clips: {acc:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
