"""The layers of a model, by the names ``model.named_modules()`` gives them, and what each outputs.

Names are only ever looked up in that table: request text is never evaluated or walked as attributes. Everything
here is written over ``output.shape[1:]``, so a 2-D network (``[C, H, W]`` maps) and a 3-D one (``[C, T, H, W]``)
are read the same way.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .capture import LayerHooks, restore_mode
from .errors import UnknownLayer

__all__ = ["LayerInfo", "LayerTable", "clip_text"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def clip_text(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis), for echoing request text in error messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pools(module: nn.Module) -> bool:
    return "Pool" in type(module).__name__


def _passes_through(module: nn.Module) -> bool:
    """Pooling and dropout-like modules: they name no stage of features of their own."""
    name = type(module).__name__
    return _pools(module) or "Dropout" in name or name in ("Identity", "StochasticDepth", "Flatten")


@dataclass(frozen=True)
class LayerInfo:
    """One named module. ``output_shape`` leaves out the batch dimension; ``None`` when the module did not run or
    did not return a tensor. A module called more than once in a forward pass (ResNet's shared ``relu``) reports its
    last call, as feature-map capture does."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    has_filters: bool

    @property
    def spatial(self) -> bool:
        """Whether the output is feature maps: ``[C, H, W]`` or ``[C, T, H, W]``."""
        return self.output_shape is not None and len(self.output_shape) >= 3

    def as_dict(self) -> dict:
        shape = list(self.output_shape) if self.output_shape is not None else None
        return {"name": self.name, "type": self.type, "output_shape": shape}


class LayerTable:
    """Every named module of ``model`` with its output shape for one input of ``input_shape`` (``(C, H, W)`` or
    ``(C, T, H, W)``).

    Built with one forward pass on zeros, on the model's own device; the model's train/eval mode is restored.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        self.input_shape = tuple(int(s) for s in input_shape)
        modules = {name: m for name, m in model.named_modules() if name}
        device = next(model.parameters()).device
        with restore_mode(model, train=False), torch.inference_mode(), LayerHooks(model, modules, keep="shape") as h:
            h.run(torch.zeros((1, *self.input_shape), device=device))
        self._layers = {
            name: LayerInfo(name, type(m).__name__, h.shapes.get(name), isinstance(m, _CONVS))
            for name, m in modules.items()
        }
        self._types = {name: m for name, m in modules.items()}
        self._events = list(h.events)
        order = [name for name, _, _ in self._events]
        self._finished = list(dict.fromkeys(reversed(order)))[::-1]  # each module at its last finish

    def __iter__(self):
        return iter(self._layers.values())

    def __len__(self) -> int:
        return len(self._layers)

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def __getitem__(self, name: str) -> LayerInfo:
        return self._layers[name]

    @property
    def names(self) -> list[str]:
        return list(self._layers)

    @property
    def activations(self) -> tuple[int, int]:
        """``(total, largest)``: elements of the tensors the leaf modules made in one pass of one input (each call
        counts, a module that returns its input does not), and of the largest of them; for memory estimates."""
        sizes = [
            math.prod(shape)
            for name, shape, same in self._events
            if not same and not any(True for _ in self._types[name].children())
        ]
        return sum(sizes), max(sizes, default=0)

    def share_after(self, name: str) -> float:
        """The share of one pass's work (counted in the elements the leaf modules make) that comes after ``name``
        last finishes: what a pass of the layers above it costs, next to a whole pass."""
        made = [
            0 if same or any(True for _ in self._types[n].children()) else math.prod(shape)
            for n, shape, same in self._events
        ]
        last = max((k for k, (n, _, _) in enumerate(self._events) if n == name), default=-1)
        return sum(made[last + 1 :]) / (sum(made) or 1)

    @property
    def conv_names(self) -> list[str]:
        """Convolutions (the modules with filters), in the order ``named_modules()`` lists them."""
        return [i.name for i in self if i.has_filters]

    @property
    def spatial_names(self) -> list[str]:
        return [i.name for i in self if i.spatial]

    @property
    def executed_convs(self) -> list[str]:
        """Convolutions in the order they ran (each at its last run)."""
        return [n for n in self._finished if self._layers[n].has_filters]

    @property
    def filter_layers(self) -> list[str]:
        """The first and the last convolution that ran (one name when the model has a single one)."""
        convs = self.executed_convs
        return list(dict.fromkeys([convs[0], convs[-1]])) if convs else []

    @property
    def default_layers(self) -> list[str]:
        """Feature maps shown by default (:meth:`featuremap_defaults` of :attr:`cam_layer`)."""
        return self.featuremap_defaults(self.cam_layer)

    def featuremap_defaults(self, cam_layer: str | None) -> list[str]:
        """The first convolution and the last one, or the last stage ``cam_layer`` where the last convolution's
        output is not that stage's (DenseNet concatenates 32-channel convolutions into 1024 channels; Inception's
        branches into 2048)."""
        layers = self.filter_layers
        if layers and cam_layer and self._layers[layers[-1]].output_shape != self._layers[cam_layer].output_shape:
            layers = list(dict.fromkeys([layers[0], cam_layer]))
        return layers

    @property
    def cam_layer(self) -> str | None:
        """The last convolutional stage: the last output of the forward pass that still has spatial extent (more
        than one position) and that a pooling or dropout layer did not make, named by the outermost module that
        returns it (AlexNet ``features.11``, VGG16 ``features.29``, ResNet ``layer4``, DenseNet ``features``,
        Inception-v3 ``Mixed_7c``, EfficientNet ``features``)."""
        best: str | None = None
        group_ok, group_name = False, None
        for name, shape, same in self._events:
            module = self._types[name]
            if not same:  # a new tensor: a new group, judged by the module that made it
                group_ok = len(shape) >= 3 and math.prod(shape[1:]) > 1 and not _pools(module)
                group_name = None
            if not _passes_through(module):
                group_name = name
            if group_ok and group_name is not None:
                best = group_name
        return best

    def resolve(self, names: Iterable[str], *, need: str = "any") -> list[str]:
        """Check ``names`` against the table and return them, in order, without repeats.

        ``need`` is ``"any"``, ``"spatial"`` (a ``[C, H, W]`` or ``[C, T, H, W]`` output, for feature maps) or
        ``"filters"`` (a convolution). Raises :class:`UnknownLayer` naming the offender and the valid names.
        """
        valid = {"any": self.names, "spatial": self.spatial_names, "filters": self.conv_names}[need]
        out: list[str] = []
        for name in names:
            if name not in self._layers:
                close = difflib.get_close_matches(name[:200], self.names, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise UnknownLayer(
                    f"unknown layer {clip_text(name)!r}{hint}; valid: {clip_text(', '.join(self.names), 2000)}"
                )
            if name not in valid:
                info = self._layers[name]
                what = {
                    "spatial": f"outputs {list(info.output_shape or ())}, not [C, H, W] or [C, T, H, W] feature maps",
                    "filters": "has no convolution filters",
                }[need]
                raise UnknownLayer(
                    f"layer {name!r} ({info.type}) {what}; layers that do: {clip_text(', '.join(valid), 2000)}"
                )
            if name not in out:
                out.append(name)
        return out
