"""classify: the top-k classes of the input, from the forward pass every image request shares."""

from __future__ import annotations

from cnnviz import InvalidOption

from ..options import Option
from .base import ForwardMode

TOPK = Option("topk", "int", lambda s: min(5, len(s.labels)), "how many classes, best first", 1, 1000,
              default_text="5 (or the class count)")  # fmt: skip


class Classify(ForwardMode):
    name = "classify"
    summary = "top-k classes with softmax scores; runs whenever an input is given"
    options = (TOPK,)
    needs_input = True

    def finish(self, values, served, fields):
        if values["topk"] > len(served.labels):  # the declared cap is 1000; this model may have fewer classes
            raise InvalidOption(f"option 'topk' must be a whole number in 1..{len(served.labels)}, "
                                f"got '{values['topk']}'")  # fmt: skip
        return values

    def present(self, served, values, probs, acts):
        scores, idx = probs.topk(values["topk"])
        return [
            {"index": j, "label": served.labels[j], "score": s}
            for s, j in zip(scores.tolist(), idx.tolist(), strict=True)
        ]
