"""The sample inputs the README's and docs' examples post, made from the project's own generators (deterministic).

    .venv/bin/python scripts/make_samples.py      # writes samples/ (already committed; this remakes them)

- ``samples/shape.png``: a cross, 64 x 64, as ``shapes_viz`` was trained on (``examples/shapes/shapes_data.py``);
- ``samples/shape.npy``: the same cross already normalized, float32 ``[3, 64, 64]``: an exact input, used as given;
- ``samples/right.mp4``: 16 frames of a shape moving right, 64 x 64 H.264 (``examples/motion/motion_data.py``),
  which ``motion_viz`` reads as ``right`` and torchvision's video CNNs take as any clip.

The photo is ``docs/grace_hopper.jpg`` (torchvision's test image).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from examples.motion.motion_data import CLASSES as MOTIONS  # noqa: E402
from examples.motion.motion_data import make_clips, write_video  # noqa: E402
from examples.shapes.shapes_data import CLASSES as SHAPES  # noqa: E402
from examples.shapes.shapes_data import make_shapes, normalize  # noqa: E402


def first(make, classes, want: str, seed: int):
    """The first generated example of class ``want`` (labels are drawn at random: draw until one comes)."""
    while True:
        items, labels, _ = make(32, seed)
        hits = (labels == classes.index(want)).nonzero()
        if len(hits):
            return items[int(hits[0])]
        seed += 1


def main(out: Path = ROOT / "samples") -> None:
    out.mkdir(exist_ok=True)
    cross = first(make_shapes, SHAPES, "cross", 2026)  # [3, 64, 64] in [0, 1]
    Image.fromarray((cross.permute(1, 2, 0) * 255).round().byte().numpy()).save(out / "shape.png", optimize=True)
    exact = normalize(cross.unsqueeze(0))[0].numpy().astype(np.float32)
    np.save(out / "shape.npy", exact)
    buf = io.BytesIO()
    write_video(first(make_clips, MOTIONS, "right", 1000), buf)
    (out / "right.mp4").write_bytes(buf.getvalue())
    for p in sorted(out.iterdir()):
        print(f"{p.relative_to(ROOT)}  {p.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
