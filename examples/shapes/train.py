"""Train ShapesNet on freshly generated shapes; deterministic for a seed, about a minute on 2 CPU cores.

Run: .venv/bin/python examples/shapes/train.py [--seed 0] [--steps 1000] [--out examples/shapes/weights.pt]
``--arch judge`` trains the second architecture (``judge.py``) that the tests judge pictures with.
Prints the accuracy on 2,000 newly generated images (a seed never used in training).
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

from examples.shapes.judge import JudgeNet  # noqa: E402
from examples.shapes.model import ShapesNet  # noqa: E402
from examples.shapes.shapes_data import make_shapes, normalize  # noqa: E402

TEST_SEED = 10_000_000  # training batches use seeds seed * 100_000 + step, far below this
ARCHS = {"shapes": ShapesNet, "judge": JudgeNet}


def accuracy(model: torch.nn.Module, n: int = 2000, seed: int = TEST_SEED) -> float:
    images, labels, _ = make_shapes(n, seed)
    with torch.inference_mode():
        return (model(normalize(images)).argmax(1) == labels).float().mean().item()


def train(seed: int = 0, steps: int = 1000, batch: int = 64, lr: float = 5e-3, arch: str = "shapes") -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ARCHS[arch]().train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for step in range(steps):
        images, labels, _ = make_shapes(batch, seed * 100_000 + step)
        loss = F.cross_entropy(model(normalize(images)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0:
            print(f"step {step:5d}  loss {loss.item():.3f}", flush=True)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--out", default=str(HERE / "weights.pt"))
    p.add_argument("--arch", choices=sorted(ARCHS), default="shapes")
    args = p.parse_args()
    t0 = time.perf_counter()
    model = train(args.seed, args.steps, arch=args.arch)
    seconds = time.perf_counter() - t0
    acc = accuracy(model)
    torch.save(model.state_dict(), args.out)
    print(f"trained in {seconds:.0f} s; accuracy on 2,000 new images: {acc:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
