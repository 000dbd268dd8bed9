"""Forward hooks on named modules, in one helper: registered once, always removed, copying what they capture.

Every other module of the core records layer outputs through :class:`LayerHooks` (feature maps, Grad-CAM, the
layer table, activation maximization, inversion); nothing else registers a forward hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["LayerHooks", "capture_outputs", "restore_mode"]


@contextmanager
def restore_mode(model: nn.Module, *, train: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in train or eval mode for the block, then restore each module's own mode."""
    modes = {m: m.training for m in model.modules()}
    model.train(train)
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


class _Stop(Exception):
    """Raised by a hook once every named module has run: the layers above are not needed."""


class LayerHooks:
    """Record what the named modules of ``model`` output, during every forward pass while the hooks are on.

    Use as a context manager (hooks are registered on entry and removed on exit, also when a pass fails), and run
    passes through :meth:`run` (or call the model yourself).

    Args:
        model: any ``nn.Module``; ``names`` come from its ``named_modules()`` (check them first, e.g. with
            :class:`~cnnviz.LayerTable`).
        keep: ``"copy"`` (default): a detached copy of each output. ``"graph"``: the output itself, in the autograd
            graph, for gradients with respect to it. ``"shape"``: only the shape (``outputs`` stays empty).
            Whatever is kept, the rest of the network gets a **copy** of a hooked module's output, so an in-place op
            downstream (AlexNet's and VGG's ``ReLU(inplace=True)``) never changes what was recorded.
        stop: stop the pass (``run`` returns ``None``) as soon as every named module has run once, so that the
            layers above are not computed (activation maximization of inner layers).
        edit: ``(name, output) -> tensor`` that the rest of the network gets instead of a named module's output
            (Ablation-CAM's copies with one channel zeroed, a batch of its own); what is kept is the output itself.

    Attributes:
        outputs: ``name -> tensor`` of the last pass (a module called several times keeps its last output).
        shapes: ``name -> shape without the batch dimension``, of the last pass.
        events: ``(name, shape, same_as_previous)`` for every module call of the last pass, in the order calls
            finish (a container finishes after its children); ``same_as_previous`` is true when the module returned
            the very tensor the previous call returned (containers, in-place activations, dropout at eval).
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        *,
        keep: str = "copy",
        stop: bool = False,
        edit: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if keep not in ("copy", "graph", "shape"):
            raise ValueError(f"keep must be 'copy', 'graph' or 'shape', got {keep!r}")
        modules = dict(model.named_modules())
        self.model, self.names, self.keep, self.stop = model, list(dict.fromkeys(names)), keep, stop
        self.edit = edit
        self._modules = [modules[n] for n in self.names]
        self.outputs: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.events: list[tuple[str, tuple[int, ...], bool]] = []
        self._previous: torch.Tensor | None = None
        self._handles: list = []

    def _hook_for(self, name: str):
        def hook(_module, _args, output):
            if not isinstance(output, torch.Tensor):
                return None
            self.events.append((name, tuple(output.shape[1:]), output is self._previous))
            self._previous = output
            self.shapes[name] = tuple(output.shape[1:])
            if self.keep != "shape":
                self.outputs[name] = output if self.keep == "graph" else output.detach().clone()
                if self.stop and len(self.outputs) == len(self.names):
                    raise _Stop
            if self.edit is not None:
                return self.edit(name, output)
            # The network continues on a copy only where it may change the tensor in place and we keep the tensor.
            return output.clone() if self.keep == "graph" else None

        return hook

    def __enter__(self) -> LayerHooks:
        try:
            for name, module in zip(self.names, self._modules, strict=True):
                self._handles.append(module.register_forward_hook(self._hook_for(name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._previous = None

    def clear(self) -> None:
        self.outputs.clear()
        self.shapes.clear()
        self.events.clear()
        self._previous = None

    def run(self, x: torch.Tensor) -> torch.Tensor | None:
        """One forward pass of ``x`` with fresh records; the model's output, or ``None`` when it was stopped."""
        self.clear()
        try:
            return self.model(x)
        except _Stop:
            return None
        finally:
            self._previous = None


@contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Detached copies of the named modules' outputs during the passes run inside the block (see
    :class:`LayerHooks`); yields the dict ``name -> tensor``, filled as the model runs."""
    with LayerHooks(model, names) as hooks:
        yield hooks.outputs
