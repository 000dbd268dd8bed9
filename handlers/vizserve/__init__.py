"""vizserve: the HTTP edge of cnnviz, for any model server.

Reads requests (form fields, JSON, raw bodies), decodes images and arrays, runs the modes (:mod:`vizserve.modes`,
one module each, over :mod:`cnnviz`), and encodes the answer (JSON with base64 PNG pictures and .npy arrays, or one
PNG). It never imports TorchServe: the TorchServe handler (``viz_handler.py``) is a thin adapter over
:class:`VizService`.
"""

from .decode import read_image, read_npy
from .loading import load_service, model_for
from .modes import MODES
from .options import Option
from .preprocess import image_transform
from .request import GLOBAL_OPTIONS, VizRequest, all_options, fields_of, parse_request
from .served import Limits, Served, smallest_input_side
from .service import Reply, VizService

__all__ = [
    "GLOBAL_OPTIONS",
    "MODES",
    "Limits",
    "Option",
    "Reply",
    "Served",
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
