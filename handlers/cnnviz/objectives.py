"""What activation maximization maximizes: small terms that compose, as Lucid's and lucent's objectives do.

A row's objective is an expression: one term, or a weighted sum of terms written with ``+``, ``-``, unary ``-`` and
``*`` by a number (``0.5 * Target("features.10", 3) - Target("features.10", 7)``). Every term reads the outputs of
hooked layers for the whole batch (``[K, C, *S]``; ``""`` is the class scores ``[K, classes]``) and gives row ``k``
one value:

- :class:`Target`: a channel's mean over space (and time), one unit of it, or (layer ``""``) a class's score.
- :class:`Direction`: lucent's ``direction``: the mean over positions of the cosine similarity between the layer's
  activation vector ``[C]`` at each position and a direction ``[C]``. Departure: Lucid's ``direction`` is a dot
  product (its ``direction_cossim`` is closer); we take lucent's cosine, so the length of the direction and the
  size of the activations do not matter.
- :class:`Diversity`: Lucid's ``diversity``: each image's Gram matrix of the layer's channels (``[C, C]`` over all
  positions), flattened and L2-normalized; the rows whose whole expressions are equal form a group, and the term is
  minus the mean cosine similarity of the row's Gram matrix with those of the other rows of its group (0 for a row
  alone). Departure: Lucid returns one number for the batch, the sum over ordered pairs divided by the batch size;
  ours is per row and divided by the others' count, so that it reads in [-1, 0] for any group size (Gram matrices
  are positive semi-definite, so their inner products are >= 0; the same as Lucid's for two images; the rows' sum
  is Lucid's times ``n / (n - 1)``). It is the one term through which rows of a batch interact.

The layers an objective needs are collected from its terms, so one :class:`~cnnviz.capture.LayerHooks` records
them all and the forward pass stops after the deepest one unless a class score is needed.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .capture import LayerHooks

__all__ = ["CLASS_SCORES", "Batch", "Direction", "Diversity", "Objective", "Sum", "Target", "Term"]

CLASS_SCORES = ("logprob", "logit", "margin")


def _class_scores(logits: torch.Tensor, how: str) -> torch.Tensor:
    """``[K, classes]`` -> what a class target maximizes, per class: its log-probability (saturates at 0 once the
    class wins), its logit, or its margin over the best other class (``logit_c - max_{j != c} logit_j``, which
    keeps growing while it wins and, unlike the logit, cannot grow by raising every class together)."""
    if how == "logprob":
        return logits.log_softmax(dim=-1)
    if how == "logit":
        return logits
    top2 = logits.topk(min(2, logits.shape[-1]), dim=-1).values
    best_other = torch.where(logits == top2[..., :1], top2[..., -1:], top2[..., :1])
    return logits - best_other


class Batch:
    """What terms read in one pass: ``outputs`` (layer -> ``[K, ...]``, ``""`` the class scores), ``native`` (each
    layer's spatial size on the first pass, for units), ``groups`` (row -> the rows of its group, for diversity);
    Gram matrices and direction vectors are computed once per pass."""

    def __init__(self, outputs: dict[str, torch.Tensor], native: dict[str, tuple[int, ...]], groups: list[list[int]]):
        self.outputs, self.native, self.groups = outputs, native, groups
        self._grams: dict[str, torch.Tensor] = {}
        self._vectors: dict[tuple[float, ...], torch.Tensor] = {}

    def grams(self, layer: str) -> torch.Tensor:
        """``[K, C * C]``: each row's Gram matrix of ``layer``'s channels over its positions, L2-normalized."""
        if layer not in self._grams:
            out = self.outputs[layer].float()
            flat = out.reshape(len(out), out.shape[1], -1)  # [K, C, positions]
            self._grams[layer] = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1, eps=1e-10)
        return self._grams[layer]

    def vector(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        if values not in self._vectors:
            self._vectors[values] = torch.tensor(values, dtype=torch.float32, device=like.device)
        return self._vectors[values]


class Term:
    """An objective: ``row(batch, k)`` is row ``k``'s value (a scalar in the graph). ``+``, ``-``, unary ``-`` and
    ``*`` by a number give a :class:`Sum`; ``layers`` are the layers it reads (``""``: the class scores)."""

    @property
    def layers(self) -> frozenset[str]:
        raise NotImplementedError

    def row(self, batch: Batch, k: int) -> torch.Tensor:
        raise NotImplementedError

    def text(self, labels: Sequence[str] | None = None) -> str:
        """How the term reads (``labels`` name the classes)."""
        raise NotImplementedError

    def parts(self) -> tuple[tuple[float, Term], ...]:
        """``(weight, term)`` pairs whose weighted sum this is."""
        return ((1.0, self),)

    def __add__(self, other: object) -> Sum:
        if not isinstance(other, Term):
            return NotImplemented
        return Sum(self.parts() + other.parts())

    def __sub__(self, other: object) -> Sum:
        if not isinstance(other, Term):
            return NotImplemented
        return self + -other

    def __neg__(self) -> Sum:
        return self * -1.0

    def __mul__(self, weight: object) -> Sum:
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            return NotImplemented
        return Sum(tuple((float(weight) * w, t) for w, t in self.parts()))

    __rmul__ = __mul__


@dataclass(frozen=True)
class Sum(Term):
    """``sum(weight * term)`` over ``terms`` (pairs of a weight and a term that is not a sum), in written order."""

    terms: tuple[tuple[float, Term], ...]

    def parts(self) -> tuple[tuple[float, Term], ...]:
        return self.terms

    @property
    def layers(self) -> frozenset[str]:
        return frozenset().union(*(t.layers for _, t in self.terms))

    def row(self, batch: Batch, k: int) -> torch.Tensor:
        return sum(w * t.row(batch, k) for w, t in self.terms)

    def text(self, labels: Sequence[str] | None = None) -> str:
        out = ""
        for i, (w, t) in enumerate(self.terms):
            sign = ("-" if w < 0 else "") if i == 0 else (" - " if w < 0 else " + ")
            out += sign + (t.text(labels) if abs(w) == 1 else f"{abs(w):g} * {t.text(labels)}")
        return out


@dataclass(frozen=True)
class Target(Term):
    """``layer`` channel ``channel`` (mean over space, and time for video), or unit (``y``, ``x``, and for video
    ``t``) of it; a class is the layer ``""``'s channel (its score, as the objective's ``classes`` says). Units are
    taken at the same relative place when the transforms change a layer's size."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None
    t: int | None = None  # a video layer's frame; None: the unit's mean over frames

    @property
    def layers(self) -> frozenset[str]:
        return frozenset((self.layer,))

    def row(self, batch: Batch, k: int) -> torch.Tensor:
        out = batch.outputs[self.layer][k, self.channel]
        if out.dim() == 0:
            return out
        h, w = out.shape[-2:]
        base_h, base_w = batch.native.setdefault(self.layer, (h, w))
        if self.y is None:
            return out.mean()
        unit = out[..., min(h - 1, self.y * h // base_h), min(w - 1, self.x * w // base_w)]
        if unit.dim() == 1:  # a video layer [T', h, w]: the unit at frame t, or over all frames
            unit = unit.mean() if self.t is None else unit[min(len(unit) - 1, self.t)]
        return unit

    def text(self, labels: Sequence[str] | None = None) -> str:
        if not self.layer:
            return labels[self.channel] if labels is not None else f"class {self.channel}"
        unit = "" if self.y is None else f" at y={self.y} x={self.x}" + ("" if self.t is None else f" t={self.t}")
        return f"{self.layer}:{self.channel}{unit}"


@dataclass(frozen=True)
class Direction(Term):
    """The mean over ``layer``'s positions of the cosine similarity between the activation vector ``[C]`` there and
    ``vector`` (``C`` numbers; lucent's ``direction``). A layer without positions (``[C]``) gives the cosine of its
    one vector. ``source`` only names the direction in :meth:`text` (``"image"``: an image's mean activation)."""

    layer: str
    vector: tuple[float, ...]
    source: str = ""

    @property
    def layers(self) -> frozenset[str]:
        return frozenset((self.layer,))

    def row(self, batch: Batch, k: int) -> torch.Tensor:
        out = batch.outputs[self.layer][k].float()  # [C, *S]
        if len(self.vector) != out.shape[0]:
            raise ValueError(f"a direction at {self.layer!r} needs {out.shape[0]} numbers, got {len(self.vector)}")
        v = batch.vector(self.vector, out).view(-1, *([1] * (out.dim() - 1)))
        return F.cosine_similarity(out, v.expand_as(out), dim=0).mean()

    def text(self, labels: Sequence[str] | None = None) -> str:
        return f"direction({self.layer}{', ' + self.source if self.source else ''})"


@dataclass(frozen=True)
class Diversity(Term):
    """Minus the mean cosine similarity of this row's Gram matrix of ``layer`` with those of the other rows of its
    group (the rows with equal expressions); 0 for a row alone. Lucid's ``diversity``, per row (module docstring)."""

    layer: str

    @property
    def layers(self) -> frozenset[str]:
        return frozenset((self.layer,))

    def row(self, batch: Batch, k: int) -> torch.Tensor:
        grams = batch.grams(self.layer)
        others = [j for j in batch.groups[k] if j != k]
        if not others:
            return grams.new_zeros(())
        return -(grams[others] @ grams[k]).mean()

    def text(self, labels: Sequence[str] | None = None) -> str:
        return f"diversity({self.layer})"


class _Hooked:
    """An objective whose ``hooks`` (:class:`LayerHooks`) are on while the optimization runs (``with objective:``)."""

    hooks: LayerHooks

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.close()


class Objective(_Hooked):
    """Per-row objective ``[K]`` of ``targets`` (one :class:`Term` per row: a :class:`Target`, or any expression),
    one forward pass per call. The hooks are registered once, on entry (``with objective:``), not per step; the
    pass stops after the deepest layer a term reads unless a class is a term. Class scores are ``classes``
    (:data:`CLASS_SCORES`). Rows whose expressions are equal form a group (for :class:`Diversity`)."""

    def __init__(self, model: nn.Module, targets: Sequence[Term], classes: str = "logprob") -> None:
        if classes not in CLASS_SCORES:
            raise ValueError(f"class score must be one of {CLASS_SCORES}, got {classes!r}")
        self.targets = list(targets)
        for t in self.targets:
            if not isinstance(t, Term):
                raise TypeError(f"an objective row must be a Term (Target, Direction, a sum...), got {t!r}")
        self.classes = classes
        layers: frozenset[str] = frozenset().union(*(t.layers for t in self.targets))
        self.needs_classes = "" in layers
        self.hooks = LayerHooks(model, sorted(layers - {""}), keep="graph", stop=not self.needs_classes)
        self.native: dict[str, tuple[int, ...]] = {}
        members: dict[Term, list[int]] = {}
        for k, t in enumerate(self.targets):
            members.setdefault(t, []).append(k)
        self.groups = [members[t] for t in self.targets]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[K, ...]``, or ``[n * K, ...]`` (n transformed copies of the K images, one after the other) ->
        ``[K]`` or ``[n * K]``; each copy's rows are scored among themselves (diversity compares within a copy)."""
        logits = self.hooks.run(x)
        outputs = dict(self.hooks.outputs)
        if logits is not None:
            outputs[""] = _class_scores(logits.float(), self.classes)
        k = len(self.targets)
        values = []
        for c in range(len(x) // k):
            part = {name: out[c * k : (c + 1) * k] for name, out in outputs.items()}
            batch = Batch(part, self.native, self.groups)
            values.extend(t.row(batch, j).float() for j, t in enumerate(self.targets))
        return torch.stack(values)
