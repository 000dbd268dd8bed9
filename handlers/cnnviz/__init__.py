"""cnnviz: what convolutional networks see, as tensors in and tensors out.

A core free of any model server: it never imports TorchServe, takes its device from its inputs, and knows nothing
of PNG or base64 (the edge, :mod:`vizserve`, does that). Inputs are ``[N, C, *S]``: ``S`` is ``H, W`` for images
and ``T, H, W`` for video, and the operations that allow it are written over ``x.shape[2:]``.
"""

from .actmax import ActmaxResult, FeatureMatch, Objective, Optimization, Settings, Target, actmax, invert, shared_copy
from .attributions import (
    BASELINES,
    SALIENCY_METHODS,
    SIGNED_METHODS,
    attribution_map,
    baseline,
    deconv_projection,
    lrp_problem,
    perturbations,
    saliency,
)
from .cam import CAM_METHODS, BaseCAM, CamResult, GradCAM, GradCAMPlusPlus, GuidedGradCAM, upsample
from .capture import LayerHooks, capture_outputs, restore_mode
from .errors import InputTooLarge, InvalidInput, InvalidOption, OverBudget, TooManyJobs, UnknownLayer, VizError
from .faithfulness import MAX_FAITHFULNESS_STEPS, Faithfulness, deletion_insertion
from .inference import forward
from .layers import LayerInfo, LayerTable, clip_text
from .models import (
    ARCHITECTURES,
    TRANSFORMERS,
    VIDEO_ARCHITECTURES,
    WeightsUnavailable,
    build_model,
    check_arch,
    imagenet_state_dict,
    imagenet_weights,
    load_weights,
    model_from_file,
    random_state_dict,
    read_state_dict,
    torchvision_spec,
)
from .objectives import Direction, Diversity, Sum, Term
from .spec import ModelSpec, Preprocess
from .visuals import diverging, featuremap_tiles, kernel_matrix, rgb_filter_tiles, select_channels

__all__ = [
    "ARCHITECTURES",
    "VIDEO_ARCHITECTURES",
    "TRANSFORMERS",
    "ActmaxResult",
    "FeatureMatch",
    "Objective",
    "Optimization",
    "Settings",
    "Target",
    "Term",
    "Sum",
    "Direction",
    "Diversity",
    "actmax",
    "invert",
    "shared_copy",
    "BASELINES",
    "SALIENCY_METHODS",
    "SIGNED_METHODS",
    "CAM_METHODS",
    "BaseCAM",
    "CamResult",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "attribution_map",
    "baseline",
    "deconv_projection",
    "deletion_insertion",
    "Faithfulness",
    "MAX_FAITHFULNESS_STEPS",
    "lrp_problem",
    "perturbations",
    "saliency",
    "upsample",
    "InputTooLarge",
    "OverBudget",
    "TooManyJobs",
    "InvalidInput",
    "InvalidOption",
    "LayerHooks",
    "LayerInfo",
    "LayerTable",
    "ModelSpec",
    "Preprocess",
    "UnknownLayer",
    "VizError",
    "WeightsUnavailable",
    "build_model",
    "capture_outputs",
    "check_arch",
    "clip_text",
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
    "torchvision_spec",
]
