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

__all__ = ["image_transform"]


def image_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """RGB PIL image -> normalized float tensor ``[3, *pre.crop]``."""
    mode = InterpolationMode(pre.interpolation)

    def transform(img: Image.Image) -> torch.Tensor:
        img = TF.resize(img, [pre.resize], interpolation=mode, antialias=True)
        img = TF.center_crop(img, list(pre.crop))
        x = TF.convert_image_dtype(TF.pil_to_tensor(img), torch.float)
        return TF.normalize(x, mean=list(pre.mean), std=list(pre.std))

    return transform
