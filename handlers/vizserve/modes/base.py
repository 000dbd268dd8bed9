"""What a mode is: its name, its options, whether it needs an input, how its requests batch, how it answers.

The pipeline (:mod:`vizserve.pipeline`) runs modes by their kind:

- :class:`ForwardMode` (classify, featuremaps): every request of one input shape shares **one** forward pass that
  classifies and captures every layer any of them asked for.
- :class:`BatchedMode` (gradcam, saliency, deconv): requests with equal :meth:`~BatchedMode.group` keys and input
  shapes run as one batch, each row with its own target.
- :class:`OptimizeMode` (actmax, invert): optimizations; served as jobs beside the request path
  (:mod:`vizserve.jobs`), in-process within the batch's time budget.
- :class:`StaticMode` (filters, layers, describe): answers from the model alone, no input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from ..options import Option
from ..passes import Passes, memory_of, pass_batch
from ..served import Served

__all__ = ["BatchedMode", "ForwardMode", "Mode", "OptimizeMode", "StaticMode"]

Entry = dict[str, Any]


class Mode:
    """One mode. Subclasses set the class attributes and override the method of their kind."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for the docs and ``describe``
    options: ClassVar[tuple[Option, ...]] = ()
    needs_input: ClassVar[bool] = False
    #: For options of kind ``names`` that several modes share (``method``): the values this mode takes.
    claims: ClassVar[dict[str, tuple[str, ...]]] = {}

    def cost(self, served: Served, values: Mapping[str, Any], shape: tuple[int, ...] | None, memory: float) -> Passes:
        """What this mode costs for one request (:class:`vizserve.cost.Passes`), on an input of ``shape``
        ``[C, *S]`` (``None`` without one), with passes of at most what fits ``memory`` bytes: declared next to the
        options, read by the cost model before any work. Default: nothing worth counting."""
        return Passes()

    def finish(self, values: dict[str, Any], served: Served, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Checks that need the model or several options at once (layers, classes, channel ranges); returns the
        values the mode runs with. ``values`` holds every declared option (given, or its default) and ``raw``."""
        return values

    def describe(self, served: Served) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "needs_input": self.needs_input,
            "options": [self._described(o, served) for o in self.options if o.taken_by(served)],
        }

    def _described(self, option: Option, served: Served) -> dict[str, Any]:
        """An option's declaration, with the values this mode takes of an option several modes share (``method``)
        as its ``choices``."""
        d = option.describe(served)
        if option.name in self.claims:
            d["choices"] = list(self.claims[option.name])
        return d


class ForwardMode(Mode):
    def captures(self, values: Mapping[str, Any]) -> Sequence[str]:
        """Layers whose outputs this request needs from the shared forward pass."""
        return ()

    def present(
        self, served: Served, values: Mapping[str, Any], probs: torch.Tensor, acts: Mapping[str, torch.Tensor]
    ) -> Any:
        """The response entry from the class probabilities ``[K]`` and the captured outputs (one input)."""
        raise NotImplementedError


class BatchedMode(Mode):
    def group(self, values: Mapping[str, Any]) -> tuple:
        """Requests whose keys are equal (and whose inputs have one shape) run as one batch."""
        return ()

    def rows(self, served: Served, values: Mapping[str, Any], shape: tuple[int, ...]) -> int:
        """How many requests of a group one call may take within their memory (``values["_memory"]``): as many
        as one forward and backward pass of their inputs fits, at least 1."""
        return pass_batch(served, shape, True, memory_of(served, values), 1 << 30)

    def run(
        self, served: Served, x: torch.Tensor, values: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Entry, torch.Tensor | None]]:
        """One entry per row of ``x`` ``[N, C, *S]``, and the class probabilities ``[K]`` it computed on the way
        (``None`` if it did not), so that a request asking only for this mode needs no second forward pass."""
        raise NotImplementedError


class OptimizeMode(Mode):
    def run(
        self,
        served: Served,
        values: Mapping[str, Any],
        x: torch.Tensor | None,
        budget_s: float,
        progress: Callable[[int, torch.Tensor, Callable[[], torch.Tensor]], None] | None,
    ) -> Any:
        raise NotImplementedError


class StaticMode(Mode):
    def present(self, served: Served, values: Mapping[str, Any]) -> Any:
        raise NotImplementedError
