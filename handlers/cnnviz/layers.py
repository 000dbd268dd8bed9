"""The layers of a model, by the names ``model.named_modules()`` gives them, and what each outputs.

Names are only ever looked up in that table: request text is never evaluated or walked as attributes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .capture import restore_mode
from .errors import UnknownLayer

__all__ = ["LayerInfo", "LayerTable"]


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
        return self.output_shape is not None and len(self.output_shape) == 3

    def as_dict(self) -> dict:
        shape = list(self.output_shape) if self.output_shape is not None else None
        return {"name": self.name, "type": self.type, "output_shape": shape}


class LayerTable:
    """Every named module of ``model`` with its output shape for one input of ``input_shape`` ``(C, H, W)``.

    Built with one forward pass on zeros, on the model's own device; the model's train/eval mode is restored.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> None:
        self.input_shape = tuple(int(s) for s in input_shape)
        modules = {name: m for name, m in model.named_modules() if name}
        shapes: dict[str, tuple[int, ...]] = {}
        finished: list[str] = []  # execution order: a container finishes after its children

        def hook_for(name: str):
            def hook(_module, _args, output):
                if isinstance(output, torch.Tensor):
                    shapes[name] = tuple(output.shape[1:])
                    finished.append(name)

            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
        device = next(model.parameters()).device
        try:
            with restore_mode(model, train=False), torch.inference_mode():
                model(torch.zeros((1, *self.input_shape), device=device))
        finally:
            for h in handles:
                h.remove()
        self._layers = {
            name: LayerInfo(name, type(m).__name__, shapes.get(name), isinstance(m, nn.Conv2d))
            for name, m in modules.items()
        }
        self._finished = list(dict.fromkeys(reversed(finished)))[::-1]  # each module at its last finish

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
    def conv_names(self) -> list[str]:
        return [i.name for i in self if i.has_filters]

    @property
    def spatial_names(self) -> list[str]:
        return [i.name for i in self if i.spatial]

    @property
    def default_layers(self) -> list[str]:
        """The first and the last convolution (one name when the model has a single one)."""
        convs = self.conv_names
        return list(dict.fromkeys([convs[0], convs[-1]])) if convs else []

    @property
    def cam_layer(self) -> str | None:
        """The last convolutional stage: of the modules whose output has the last convolution's shape, the one that
        finishes last in a forward pass (AlexNet ``features.11``, VGG16 ``features.29``, ResNet ``layer4``)."""
        convs = self.conv_names
        if not convs:
            return None
        shape = self._layers[convs[-1]].output_shape
        same = [n for n in self._finished if self._layers[n].output_shape == shape]
        return same[-1]

    def resolve(self, names: Iterable[str], *, need: str = "any") -> list[str]:
        """Check ``names`` against the table and return them, in order, without repeats.

        ``need`` is ``"any"``, ``"spatial"`` (a ``[C, H, W]`` output, for feature maps) or ``"filters"``
        (a ``Conv2d``). Raises :class:`UnknownLayer` naming the offender and the valid names.
        """
        valid = {"any": self.names, "spatial": self.spatial_names, "filters": self.conv_names}[need]
        out: list[str] = []
        for name in names:
            if name not in self._layers:
                close = difflib.get_close_matches(name, self.names, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise UnknownLayer(f"unknown layer {name!r}{hint}; valid: {', '.join(self.names)}")
            if name not in valid:
                info = self._layers[name]
                what = {
                    "spatial": f"outputs {list(info.output_shape or ())}, not [C, H, W] feature maps",
                    "filters": "has no convolution filters",
                }[need]
                raise UnknownLayer(f"layer {name!r} ({info.type}) {what}; layers that do: {', '.join(valid)}")
            if name not in out:
                out.append(name)
        return out
