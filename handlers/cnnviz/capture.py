"""Forward hooks that copy what a layer outputs, owned by a context manager so they never outlive a call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["capture_outputs", "restore_mode"]


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


@contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules during the forward passes run inside the block.

    Yields a dict ``name -> tensor`` filled as the model runs. Each output is detached and **copied**: AlexNet and
    VGG follow each convolution with ``ReLU(inplace=True)``, which would otherwise overwrite what was captured with
    the post-ReLU values. A module called several times in one pass keeps its last output. Names must come from
    ``model.named_modules()`` (check them with :class:`~cnnviz.LayerTable` first); the hooks are removed on exit,
    also when the forward pass fails.
    """
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                store[name] = output.detach().clone()

        return hook

    handles = []
    try:
        for name in dict.fromkeys(names):
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield store
    finally:
        for h in handles:
            h.remove()
