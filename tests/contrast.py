"""How well a map shows over its input: the contrast the overlay tests assert and bench/overlay_contrast.py measures.

Colours are compared in CIELAB (Pillow's LittleCMS, sRGB to Lab D50), where a distance of about 2 is just visible and
the distance between two colours says how different they look (CIE76 Delta E).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageCms

_TO_LAB = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")


def lab(rgb: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 sRGB -> ``H x W x 3`` float (L* 0..100, a*, b*)."""
    raw = np.asarray(ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), _TO_LAB))
    out = raw.astype(np.float64)
    out[..., 0] *= 100 / 255
    out[..., 1:] = raw[..., 1:].view(np.int8)  # a* and b* come as signed bytes
    return out


def overlay_contrast(
    photo: np.ndarray, null: np.ndarray, overlay: np.ndarray, where: np.ndarray, signed: bool
) -> dict[str, float]:
    """How an overlay shows its map and keeps its photo: ``H x W x 3`` uint8 each, ``null`` the overlay of a map
    that is 0 everywhere (what a pixel without evidence looks like in this picture); ``where`` ``H x W``, the map's
    positions in [0, 1] along its colour map (``signed``: 0.5 is the map's 0).

    ``map_shown``: the mean colour distance (Delta E) between the overlay and ``null``, each pixel weighted by the
    map's magnitude ``m`` there (``|value| / max``): how far the map's evidence stands out from no evidence, where the
    map is. For a signed map, the smaller of its positive and its negative side's (a side with under 5% of the map's
    mass is left out). ``photo_kept``: the slope of the overlay's lightness L* against the photo's (least squares),
    each pixel weighted by ``1 - m``: how much of the photo's own contrast is left to see where the map says little
    (1: all of it; an even blend at opacity ``a`` keeps about ``1 - a``).
    """
    p, n, o = (lab(x).reshape(-1, 3) for x in (photo, null, overlay))
    w = where.astype(np.float64).reshape(-1)
    m = np.clip(np.abs(2 * w - 1) if signed else w, 0, 1)
    distance = np.linalg.norm(o - n, axis=1)
    sides = [m * (w > 0.5), m * (w < 0.5)] if signed else [m]
    sides = [s for s in sides if s.sum() >= 0.05 * m.sum()] or [m]
    shown = min(float((distance * s).sum() / max(s.sum(), 1e-12)) for s in sides)
    quiet = 1 - m
    x, y = p[:, 0], o[:, 0]
    mx, my = (x * quiet).sum() / quiet.sum(), (y * quiet).sum() / quiet.sum()
    slope = ((x - mx) * (y - my) * quiet).sum() / max(((x - mx) ** 2 * quiet).sum(), 1e-12)
    return {"map_shown": shown, "photo_kept": float(slope)}
