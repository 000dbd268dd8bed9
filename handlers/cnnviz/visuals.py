"""Feature maps and filters as tiles a person can read: float tensors in ``[0, 1]``, no file formats.

Departures from habit, and why:
- feature maps are scaled per channel by default (min to max), as the course notebooks do; ``normalize="layer"``
  uses one scale for the whole layer instead, so that strong and weak channels can be compared. A constant channel
  (a dead unit) is shown black, not as amplified noise.
- first-layer filters (three input channels) are shown as RGB images, each filter scaled on its own (min to max).
- deeper filters have no colour meaning, so they are shown as a matrix: one row per output filter, one column per
  input channel, each cell a kernel in a blue-white-red map with one symmetric scale for the matrix (white is 0).
"""

from __future__ import annotations

import torch

__all__ = ["select_channels", "featuremap_tiles", "rgb_filter_tiles", "kernel_matrix", "diverging"]

_EPS = 1e-12


def select_channels(total: int, channels: int | None) -> list[int]:
    """The first ``channels`` channel indices of ``total`` (all of them when ``channels`` is ``None``)."""
    return list(range(total if channels is None else min(channels, total)))


def _minmax(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    lo = t.amin(dim=dims, keepdim=True)
    span = t.amax(dim=dims, keepdim=True) - lo
    return torch.where(span > _EPS, (t - lo) / span.clamp_min(_EPS), torch.zeros_like(t))


def featuremap_tiles(
    fmap: torch.Tensor, channels: int | None = 64, normalize: str = "channel"
) -> tuple[torch.Tensor, list[int]]:
    """Tiles of a layer's output for one input.

    Args:
        fmap: ``[C, *S]``: ``[C, H, W]``, or ``[C, T, H, W]`` for video.
        channels: how many channels to show, from channel 0; ``None`` for all. Default 64.
        normalize: ``"channel"`` (default; each channel min-max to [0, 1]) or ``"layer"`` (one min-max over all
            ``C`` channels, shown or not).

    Returns:
        ``(tiles [K, 1, *S] in [0, 1], channel indices [K])``.
    """
    if fmap.dim() < 3:
        raise ValueError(f"expected a feature map [C, H, W] or [C, T, H, W], got shape {list(fmap.shape)}")
    idx = select_channels(fmap.shape[0], channels)
    fmap = fmap.float()
    space = tuple(range(1, fmap.dim()))
    if normalize == "channel":
        tiles = _minmax(fmap[idx], dims=space)
    elif normalize == "layer":
        tiles = _minmax(fmap, dims=(0, *space))[idx]
    else:
        raise ValueError(f"normalize must be 'channel' or 'layer', got {normalize!r}")
    return tiles.unsqueeze(1), idx


def _time_along_width(weight: torch.Tensor) -> torch.Tensor:
    """3-D kernels ``[..., t, kh, kw]`` -> ``[..., kh, t * kw]``: the kernel's frames side by side, time to the
    right; 2-D kernels unchanged."""
    if weight.dim() < 5:
        return weight
    *lead, t, kh, kw = weight.shape
    return weight.movedim(-3, -2).reshape(*lead, kh, t * kw)


def rgb_filter_tiles(weight: torch.Tensor, channels: int | None = 64) -> tuple[torch.Tensor, list[int]]:
    """First-layer kernels as RGB pictures.

    Args:
        weight: ``[C_out, 3, kh, kw]``, or ``[C_out, 3, t, kh, kw]`` (a 3-D convolution: each kernel becomes a strip
            of its ``t`` frames, time to the right).
        channels: how many filters to show; ``None`` for all.

    Returns:
        ``(tiles [K, 3, kh, kw or t * kw] in [0, 1], filter indices [K])``, each filter min-max scaled on its own.
    """
    if weight.dim() not in (4, 5) or weight.shape[1] != 3:
        raise ValueError(f"expected RGB kernels [C_out, 3, (t,) kh, kw], got shape {list(weight.shape)}")
    weight = _time_along_width(weight)
    idx = select_channels(weight.shape[0], channels)
    return _minmax(weight[idx].float(), dims=(1, 2, 3)), idx


def diverging(x: torch.Tensor) -> torch.Tensor:
    """Blue-white-red colours for values in ``[-1, 1]``: ``[...] -> [..., 3]`` in ``[0, 1]``.

    -1 is blue (0, 0, 1), 0 white, +1 red (1, 0, 0); values are clamped.
    """
    x = x.clamp(-1, 1)
    pos, neg = x.clamp_min(0), (-x).clamp_min(0)
    return torch.stack([1 - neg, 1 - pos - neg, 1 - pos], dim=-1)


def kernel_matrix(
    weight: torch.Tensor, out_channels: int | None = 64, in_channels: int | None = 64
) -> tuple[torch.Tensor, list[int], list[int]]:
    """Kernels of a deeper convolution as a matrix of coloured cells.

    Args:
        weight: ``[C_out, C_in, kh, kw]``, or ``[C_out, C_in, t, kh, kw]`` (each cell a strip of the kernel's frames).
        out_channels, in_channels: how many output filters (rows) and input channels (columns) to show.

    Returns:
        ``(cells [R, C, 3, kh, kw] in [0, 1], row indices [R], column indices [C])``. One symmetric scale,
        ``max |w|`` over the shown cells, maps to the ends of :func:`diverging`.
    """
    if weight.dim() not in (4, 5):
        raise ValueError(f"expected kernels [C_out, C_in, (t,) kh, kw], got shape {list(weight.shape)}")
    weight = _time_along_width(weight)
    rows = select_channels(weight.shape[0], out_channels)
    cols = select_channels(weight.shape[1], in_channels)
    w = weight[rows][:, cols].float()
    scaled = w / w.abs().amax().clamp_min(_EPS)
    return diverging(scaled).permute(0, 1, 4, 2, 3).contiguous(), rows, cols
