"""Video in: container sniffing, clip decoding and sampling on files made here with PyAV and Pillow, broken and
hostile ones, .npy clips, and the transform against torchvision's own."""

import numpy as np
import pytest
import torch

from cnnviz import InputTooLarge, InvalidInput
from tests.images import npy
from vizserve import read_npy

# -- .npy clips ----------------------------------------------------------------------------------------------------


def test_npy_clip_used_exactly_as_given():
    arr = np.random.default_rng(0).normal(size=(3, 5, 16, 12)).astype(np.float32)
    got = read_npy(npy(arr), min_side=8, max_side=64, rank=4, max_frames=8)
    assert got.dtype == torch.float32
    assert np.array_equal(got.numpy(), arr)
    fortran = np.asfortranarray(arr)
    assert np.array_equal(read_npy(npy(fortran), min_side=8, max_side=64, rank=4).numpy(), arr)


@pytest.mark.parametrize(
    "shape, error, match",
    [
        ((3, 16, 16), InvalidInput, r"shape \[3, 16, 16\]; expected \[3, T, H, W\]"),
        ((4, 2, 16, 16), InvalidInput, r"shape \[4, 2, 16, 16\]; expected \[3, T, H, W\]"),
        ((3, 9, 16, 16), InputTooLarge, r"9 frames; this server takes at most 8"),
        ((3, 0, 16, 16), InvalidInput, r"it has no frames"),
        ((3, 2, 4, 16), InvalidInput, r"is \[3, 2, 4, 16\]; H and W must be within 8\.\.64"),
        ((3, 2, 16, 65), InputTooLarge, r"is \[3, 2, 16, 65\]; H and W must be within 8\.\.64"),
    ],
)
def test_bad_npy_clips(shape, error, match):
    with pytest.raises(error, match=match):
        read_npy(npy(np.zeros(shape, np.float32)), min_side=8, max_side=64, rank=4, max_frames=8)


def test_npy_clip_values_and_length_are_checked():
    arr = np.zeros((3, 2, 8, 8), np.float32)
    arr[1, 1, 2, 2] = np.nan
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        read_npy(npy(arr), min_side=1, max_side=64, rank=4)
    with pytest.raises(InvalidInput, match=r"\[3, 2, 8, 8\] needs 1536 bytes of data, got 1532"):
        read_npy(npy(np.zeros((3, 2, 8, 8), np.float32))[:-4], min_side=1, max_side=64, rank=4)


def test_npy_default_rank_still_wants_an_image():
    with pytest.raises(InvalidInput, match=r"shape \[3, 2, 8, 8\]; expected \[3, H, W\] \(normalized RGB\)"):
        read_npy(npy(np.zeros((3, 2, 8, 8), np.float32)), min_side=1, max_side=64)
