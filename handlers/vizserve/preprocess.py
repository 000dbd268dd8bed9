"""The eval transform of a spec: what torchvision's ``weights.transforms()`` does, for any model.

Written over torchvision's functional transforms in the same order as its ``ImageClassification`` preset (antialiased
resize of the short side and centre crop on the PIL image, then to a float tensor and normalize), because that
preset takes only square crops and a user's model may have another; a test checks the two agree exactly on
torchvision's specs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cnnviz import Preprocess

__all__ = ["decode_fit", "image_transform"]

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def decode_fit(pre: Preprocess) -> dict:
    """Keyword arguments of :func:`vizserve.decode.read_image` that decode only what ``pre`` keeps (a JPEG at
    reduced size, an extreme aspect ratio cropped first); ``{}`` where its filter has no Pillow twin."""
    if pre.interpolation not in _RESAMPLE or not isinstance(pre.resize, int):
        return {}
    return {"resize": pre.resize, "crop": tuple(pre.crop), "resample": _RESAMPLE[pre.interpolation]}


def image_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """RGB PIL image -> normalized float tensor ``[3, *pre.crop]``."""
    mode = InterpolationMode(pre.interpolation)

    def transform(img: Image.Image) -> torch.Tensor:
        img = TF.resize(img, list(pre.resize_sizes), interpolation=mode, antialias=True)
        img = TF.center_crop(img, list(pre.crop))
        x = TF.convert_image_dtype(TF.pil_to_tensor(img), torch.float)
        return TF.normalize(x, mean=list(pre.mean), std=list(pre.std))

    return transform
