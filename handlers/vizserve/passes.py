"""What a mode declares of its cost (:class:`Passes`), and the memory helpers modes and the cost model share.

Apart from :mod:`vizserve.cost` so that the modes can import it (the cost model imports the modes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .render import strip_shape
from .served import Served

__all__ = ["Passes", "activation_bytes", "memory_of", "output_shape", "pass_batch", "picture_pixels", "scale_of"]


@dataclass(frozen=True)
class Passes:
    """What one mode of one request costs, as the mode declares it.

    ``inputs``: inputs of the request's shape run forward without autograd, in all; ``grad_inputs``: run forward
    and backward (gradients to the input); ``batch``: the most inputs one pass holds (``grad``: of the backward
    kind); ``pictures``: pixels of the pictures it encodes; ``raw_bytes``: .npy arrays in its answer; ``held_bytes``:
    what it keeps while it runs besides its passes (captured maps, images being optimized); ``seconds`` and
    ``memory``: what it measured otherwise (optimizations); ``knob``: the option its cost grows with in proportion
    (name, value), for the advice of a refusal."""

    inputs: float = 0
    grad_inputs: float = 0
    batch: int = 1
    grad: bool = False
    pictures: float = 0
    raw_bytes: float = 0
    held_bytes: float = 0
    seconds: float = 0.0
    memory: float = 0
    knob: tuple[str, float] | None = None

    #: Seconds a captured element costs a feature-map picture: each channel scaled min..max and reduced to its tile
    #: (measured: 2.6e-8 on one core here, for the 33 million elements of a 2 x 1024 x 1024 clip's maps).
    MAP_S_PER_ELEMENT = 2.5e-8


def scale_of(served: Served, shape: Sequence[int]) -> float:
    """Elements of an input of ``shape`` over those of the model's own input."""
    return math.prod(shape[1:]) / math.prod(served.spec.input_shape[1:])


def activation_bytes(served: Served, shape: Sequence[int], grad: bool) -> float:
    """Bytes one input of ``shape`` ``[C, *S]`` takes in a pass: with ``grad``, every output of the pass (what
    autograd keeps for the backward, and the gradients that flow back alongside: twice that); without, three times
    the largest output (its input, itself and a workspace)."""
    total, largest = served.table.activations
    n = scale_of(served, shape) * 4  # float32
    return (2 * total if grad else 3 * largest) * n + math.prod(shape) * 4


def pass_batch(served: Served, shape: Sequence[int], grad: bool, memory: float, most: int) -> int:
    """How many inputs of ``shape`` one pass may hold within ``memory`` bytes: at most ``most``, at least 1."""
    return int(max(1, min(most, memory // max(1.0, activation_bytes(served, shape, grad)))))


def picture_pixels(h: int, w: int, count: float = 1, frames: int = 1) -> float:
    """Pixels of ``count`` pictures of an ``h x w`` map (a clip's: ``frames`` of them) as the renderer lays them
    out (:func:`vizserve.render.strip_shape`: enlarged by a whole factor, a clip's frames in rows)."""
    rows, columns, fh, fw = strip_shape(max(1, frames), max(1, h), max(1, w))
    return count * rows * columns * fh * fw


def memory_of(served: Served, values) -> float:
    """The memory a mode's passes may hold for this request: three quarters of what the admission gave it
    (``values["_memory"]``, else the job limit); the rest is for what it keeps (its input, pictures, arrays)."""
    return 0.75 * float(values.get("_memory") or served.limits.job_memory_mb * 2**20)


def output_shape(served: Served, name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The output shape of layer ``name`` for an input of ``shape`` ``[C, *S]``: its shape in the layer table
    (at the model's input size), each spatial or time axis scaled as the input's is (a stride keeps its ratio)."""
    out = served.table[name].output_shape or ()
    spec = served.spec.input_shape
    if len(out) != len(spec):
        return tuple(out)
    return (out[0], *(max(1, round(o * s / t)) for o, s, t in zip(out[1:], shape[1:], spec[1:], strict=True)))
