"""vizserve: the HTTP edge of cnnviz, for any model server.

Reads requests (form fields, JSON, raw bodies), decodes images and arrays, runs :mod:`cnnviz`, and encodes the
answer (JSON with base64 PNG pictures and .npy arrays, or one PNG). It never imports TorchServe: the TorchServe
handler (``viz_handler.py``) is a thin adapter over :class:`VizService`.
"""

from .decode import read_image, read_npy
from .loading import load_service, read_labels
from .request import MODES, OPTIONS, VizRequest, fields_of, parse_request
from .service import Limits, Reply, VizService, smallest_input_side

__all__ = [
    "MODES",
    "OPTIONS",
    "Limits",
    "Reply",
    "VizRequest",
    "VizService",
    "fields_of",
    "load_service",
    "parse_request",
    "read_image",
    "read_labels",
    "read_npy",
    "smallest_input_side",
]
