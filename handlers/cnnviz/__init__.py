"""cnnviz: what convolutional networks see, as tensors in and tensors out.

A core free of any model server: it never imports TorchServe, takes its device from its inputs, and knows nothing
of PNG or base64 (the edge, :mod:`vizserve`, does that).
"""

from .actmax import ActmaxResult, Settings, Target, actmax, invert
from .attributions import SALIENCY_METHODS, attribution_map, deconv_projection, saliency
from .cam import BaseCAM, CamResult, GradCAM, GradCAMPlusPlus, capture_for_gradient
from .capture import capture_outputs, restore_mode
from .errors import InputTooLarge, InvalidInput, InvalidOption, UnknownLayer, VizError
from .inference import forward
from .layers import LayerInfo, LayerTable
from .models import (
    ARCHITECTURES,
    WeightsUnavailable,
    build_model,
    imagenet_state_dict,
    imagenet_weights,
    load_weights,
    model_from_file,
    random_state_dict,
    read_state_dict,
)
from .visuals import diverging, featuremap_tiles, kernel_matrix, rgb_filter_tiles, select_channels

__all__ = [
    "ARCHITECTURES",
    "ActmaxResult",
    "Settings",
    "Target",
    "actmax",
    "invert",
    "SALIENCY_METHODS",
    "BaseCAM",
    "CamResult",
    "GradCAM",
    "GradCAMPlusPlus",
    "attribution_map",
    "capture_for_gradient",
    "deconv_projection",
    "saliency",
    "InputTooLarge",
    "InvalidInput",
    "InvalidOption",
    "LayerInfo",
    "LayerTable",
    "UnknownLayer",
    "VizError",
    "WeightsUnavailable",
    "build_model",
    "capture_outputs",
    "diverging",
    "featuremap_tiles",
    "forward",
    "imagenet_state_dict",
    "imagenet_weights",
    "kernel_matrix",
    "load_weights",
    "model_from_file",
    "random_state_dict",
    "read_state_dict",
    "restore_mode",
    "rgb_filter_tiles",
    "select_channels",
]
