"""vizserve: the HTTP edge of cnnviz, for any model server.

Reads requests (form fields, JSON, raw bodies), decodes images and arrays, runs the modes (:mod:`vizserve.modes`,
one module each, over :mod:`cnnviz`), and encodes the answer (JSON with base64 PNG pictures and .npy arrays, or one
PNG). It never imports TorchServe: the TorchServe handler (``viz_handler.py``) is a thin adapter over
:class:`VizService` (:mod:`vizserve.pipeline`).
"""

from .config import ConfigError, JobSettings, Limits, ServerConfig
from .decode import read_image, read_npy
from .loading import load_service, model_for
from .modes import MODES
from .options import Option
from .pipeline import VizService
from .preprocess import image_transform
from .reply import Reply
from .request import GLOBAL_OPTIONS, VizRequest, all_options, fields_of, parse_request
from .served import Served, smallest_input_side

__all__ = [
    "ConfigError",
    "GLOBAL_OPTIONS",
    "JobSettings",
    "MODES",
    "Limits",
    "Option",
    "Reply",
    "Served",
    "ServerConfig",
    "VizRequest",
    "VizService",
    "all_options",
    "fields_of",
    "image_transform",
    "load_service",
    "model_for",
    "parse_request",
    "read_image",
    "read_npy",
    "smallest_input_side",
]
