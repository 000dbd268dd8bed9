"""Procedurally generated video clips of one moving shape, with known labels and per-frame bounding boxes.

Six classes: the shape stands still, moves left, right, up or down, or rotates in place (either way). The shape is
one of five kinds that no rotation maps onto itself in a few frames (a triangle, an L, a T, a half-disc, a bar), of
random size, colour and orientation, on a tinted background with static texture, a little per-frame noise and a
slight flicker of the whole frame: the background never moves, so motion, not the background, is the signal.

Deterministic for a seed. The first frame does not tell the class: everything it shows (kind, size, position,
orientation, colours, noise) is drawn the same way for every class. Only then does the class pick a direction, and
the speed (1 to 3 px per frame at 64 px; 15 px or more over 16 frames, so "still" is never mistaken for slow motion)
is capped by the room left in that direction, so the object stays wholly inside the frame on every frame.
"""

from __future__ import annotations

import math

import torch

CLASSES = ("still", "left", "right", "up", "down", "rotating")
KINDS = ("triangle", "L", "T", "half-disc", "bar")
FRAMES = 16
SIZE = 64
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

# (dx, dy) per class, in units of the speed; "rotating" turns instead.
_DIRECTIONS = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], dtype=torch.float32)
_ROTATING = CLASSES.index("rotating")
_MIN_SPEED, _MAX_SPEED = 1.0, 3.0  # px per frame at 64 px
_MIN_TURN, _MAX_TURN = math.radians(8), math.radians(20)  # per frame, either way


def _box(u: torch.Tensor, v: torch.Tensor, x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    """Distance-like field of an axis-aligned box in shape units: < 0 inside, exact on the edges."""
    cu, cv, hu, hv = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return torch.maximum((u - cu).abs() - hu, (v - cv).abs() - hv)


def _polygon(u: torch.Tensor, v: torch.Tensor, corners: list[tuple[float, float]]) -> torch.Tensor:
    """Convex polygon (corners clockwise on screen, y down): the largest signed distance to its edges' lines."""
    d = None
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
        nx, ny = by - ay, ax - bx  # outward normal for this winding
        length = math.hypot(nx, ny)
        e = ((u - ax) * nx + (v - ay) * ny) / length
        d = e if d is None else torch.maximum(d, e)
    return d


def _shape_field(kind: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance (approximately, in units of the radius) to shape ``kind``, in its own frame: every shape
    lies within the unit disc around its origin (the point it turns about), and its centroid is near that origin."""
    if kind == 0:  # triangle, pointing up
        return _polygon(u, v, [(0.0, -0.98), (0.78, 0.6), (-0.78, 0.6)])
    if kind == 1:  # L
        return torch.minimum(_box(u, v, -0.55, -0.85, -0.05, 0.55), _box(u, v, -0.55, 0.05, 0.85, 0.55))
    if kind == 2:  # T
        return torch.minimum(_box(u, v, -0.75, -0.65, 0.75, -0.2), _box(u, v, -0.22, -0.65, 0.22, 0.75))
    if kind == 3:  # half-disc, flat side down, centroid at the origin
        c = 0.39
        return torch.maximum(torch.sqrt(u**2 + (v - c) ** 2) - 0.92, v - c)
    return _box(u, v, -0.88, -0.38, 0.88, 0.38)  # bar


def make_clips(
    n: int, seed: int, frames: int = FRAMES, size: int = SIZE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(clips [n, 3, frames, size, size] in [0, 1], labels [n], boxes [n, frames, 4])``; a box is the object's
    x0, y0, x1, y1 (inclusive) on that frame, the pixels it covers at least half."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    scale = size / 64
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    # What the first frame shows: drawn alike for every class.
    kinds = torch.randint(0, len(KINDS), (n,), generator=g)
    r = uniform(0.09, 0.13, n) * size  # radius of the disc the shape turns within
    travel = _MIN_SPEED * scale * (frames - 1)  # the least any moving object travels
    lo, hi = r + travel + 0.5, size - 1 - r - travel - 0.5
    cx, cy = lo + uniform(0, 1, n) * (hi - lo), lo + uniform(0, 1, n) * (hi - lo)
    angle0 = uniform(0, 2 * math.pi, n)
    background = uniform(0.15, 0.85, n, 3, 1, 1, 1)
    colour = uniform(0.0, 1.0, n, 3, 1, 1, 1)
    too_close = (colour - background).abs().mean(dim=1, keepdim=True) < 0.3
    colour = torch.where(too_close, 1.0 - background, colour)
    texture = 0.05 * torch.randn(n, 3, 1, size, size, generator=g)  # static: it never moves
    noise = 0.03 * torch.randn(n, 1, frames, size, size, generator=g)  # new every frame, grey
    flicker = 0.025 * torch.randn(n, 1, frames, 1, 1, generator=g)  # the whole frame, a little
    # Then the motion: a direction from the class, a speed capped by the room left that way.
    u = uniform(0, 1, n)
    turn = uniform(_MIN_TURN, _MAX_TURN, n) * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)

    direction = _DIRECTIONS[labels]  # [n, 2]
    room = torch.stack([cx - r, (size - 1 - r) - cx, cy - r, (size - 1 - r) - cy], dim=1)  # left, right, up, down
    vertical = torch.where(direction[:, 1] < 0, 2, 3)
    which = torch.where(direction[:, 0] < 0, 0, torch.where(direction[:, 0] > 0, 1, vertical))
    top = torch.clamp(room.gather(1, which[:, None])[:, 0] - 0.5, max=_MAX_SPEED * scale * (frames - 1)) / (frames - 1)
    speed = _MIN_SPEED * scale + u * (top - _MIN_SPEED * scale).clamp_min(0)
    t = torch.arange(frames, dtype=torch.float32)
    x_t = cx[:, None] + direction[:, 0:1] * speed[:, None] * t  # [n, T]
    y_t = cy[:, None] + direction[:, 1:2] * speed[:, None] * t
    a_t = angle0[:, None] + torch.where(labels == _ROTATING, turn, 0.0)[:, None] * t

    coords = torch.arange(size, dtype=torch.float32)
    dx = coords.view(1, 1, 1, size) - x_t[:, :, None, None]  # [n, T, 1, W]
    dy = coords.view(1, 1, size, 1) - y_t[:, :, None, None]  # [n, T, H, 1]
    cos, sin = torch.cos(a_t)[:, :, None, None], torch.sin(a_t)[:, :, None, None]
    field = torch.empty(n, frames, size, size)
    for k in range(len(KINDS)):
        idx = (kinds == k).nonzero()[:, 0]
        if len(idx) == 0:
            continue
        rk = r[idx].view(-1, 1, 1, 1)
        # the shape's own coordinates: the pixel's offset turned back by the shape's angle, in radii
        su = (cos[idx] * dx[idx] + sin[idx] * dy[idx]) / rk
        sv = (-sin[idx] * dx[idx] + cos[idx] * dy[idx]) / rk
        field[idx] = _shape_field(k, su, sv) * rk  # in pixels
    coverage = (0.5 - field).clamp(0, 1)  # anti-aliased edge, one pixel wide

    clips = torch.lerp(background + texture, colour, coverage[:, None])
    clips.add_(noise.add_(flicker)).clamp_(0, 1)

    mask = coverage >= 0.5  # [n, T, H, W]
    cols, rows = mask.any(dim=2), mask.any(dim=3)  # [n, T, W], [n, T, H]
    idx = torch.arange(size)
    boxes = torch.stack(
        [
            torch.where(cols, idx, size).amin(-1),
            torch.where(rows, idx, size).amin(-1),
            torch.where(cols, idx, -1).amax(-1),
            torch.where(rows, idx, -1).amax(-1),
        ],
        dim=-1,
    )
    return clips, labels, boxes


def normalize(clips: torch.Tensor) -> torch.Tensor:
    """``[N, 3, T, H, W]`` in [0, 1] -> the model's input."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1, 1)
    return (clips - mean) / std


def write_video(clip: torch.Tensor, path_or_file, fps: float = 15, container: str = "mp4") -> None:
    """A clip ``[3, T, H, W]`` in [0, 1] as an H.264 video (nearly lossless: the shapes are small) with PyAV."""
    import av

    frames = (clip.permute(1, 2, 3, 0) * 255).round().byte().numpy()
    with av.open(path_or_file, "w", format=container) as out:
        stream = out.add_stream("libx264", rate=round(fps), options={"crf": "8"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for a in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(stream.encode())


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="Write generated clips of one motion class as MP4 files to post.")
    p.add_argument("label", choices=CLASSES)
    p.add_argument("--out", default=None, help="file name (default: LABEL.mp4); with --count N, a folder")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    want, found, seed = CLASSES.index(args.label), [], args.seed * 1000
    while len(found) < args.count:  # labels are drawn at random: draw until enough of this one
        clips, labels, _ = make_clips(32, seed)
        found.extend(clips[labels == want])
        seed += 1
    if args.count == 1:
        write_video(found[0], args.out or f"{args.label}.mp4")
        print(args.out or f"{args.label}.mp4")
        return
    from pathlib import Path

    folder = Path(args.out or args.label)
    folder.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(found[: args.count]):
        write_video(clip, folder / f"{args.label}_{i}.mp4")
    print(folder)


if __name__ == "__main__":
    main()
