"""The modes, one module each; :data:`MODES` is the registry the request parser and the service read.

Adding a mode: a module with a subclass of one of the kinds in :mod:`.base`, registered here.
"""

from __future__ import annotations

from .actmax import Actmax
from .base import BatchedMode, ForwardMode, Mode, OptimizeMode, StaticMode
from .classify import Classify
from .deconv import Deconv
from .describe import Describe
from .featuremaps import Featuremaps
from .filters import Filters
from .gradcam import GradCAMMode
from .invert import Invert
from .layers import Layers
from .saliency import SaliencyMode

__all__ = ["MODES", "PICTURE_ORDER", "BatchedMode", "ForwardMode", "Mode", "OptimizeMode", "StaticMode"]

#: Every mode by name, in the order their results appear in a response (describe reads this registry).
MODES: dict[str, Mode] = {}
MODES.update(
    (m.name, m)
    for m in (
        Classify(), Featuremaps(), Filters(), Layers(), GradCAMMode(), SaliencyMode(), Deconv(), Actmax(), Invert(),
        Describe(MODES),
    )
)  # fmt: skip
#: format=png answers with the first picture of these modes, in this order.
PICTURE_ORDER = ("gradcam", "saliency", "deconv", "actmax", "invert", "featuremaps", "filters")
