"""Activation recomputation for the gradient passes of attribution.

Inside :func:`recomputed_layers`, each transformer layer of the model keeps
only its inputs for the backward pass and runs its forward again when the
backward pass reaches it (``torch.utils.checkpoint``, non-reentrant). The
gradients are the same (the layers run in eval mode: no dropout, nothing
random); the activations kept for the backward pass shrink from every
layer's to the layer inputs plus one layer's at a time, for about one more
forward pass of time. :func:`pyattn.attribute` turns it on by itself when
not even one integration step fits its memory budget (a ModernBERT-base
shaped model at 8,192 tokens: about 13 GB of activations per step without
it, about 3.5 GB with it).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.checkpoint import checkpoint

from pyattn.errors import ModelError

__all__ = ["layer_stack", "recomputed_layers"]

_MISSING = object()


def layer_stack(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's stack of transformer layers: the first ``ModuleList`` of
    ``config.num_hidden_layers`` modules of one class (None when there is
    none).

    Examples
    --------
    >>> import pyattn
    >>> model, _ = pyattn.load_demo()
    >>> stack = layer_stack(model)
    >>> len(stack), type(stack[0]).__name__
    (3, 'LongformerLayer')
    >>> layer_stack(torch.nn.Linear(2, 2)) is None
    True
    """
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(count, int) or count < 1:
        return None
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count and len({type(m) for m in module}) == 1:
            return module
    return None


@contextmanager
def recomputed_layers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block, every layer of :func:`layer_stack` recomputes its
    activations in the backward pass instead of keeping them; outside, the
    layers are as they were (their ``forward`` put back exactly, also after an
    exception).

    Raises
    ------
    ModelError
        When the model has no stack of ``config.num_hidden_layers`` layers.

    Examples
    --------
    >>> import torch, pyattn
    >>> from pyattn.models.inputs import encode
    >>> model, tokenizer = pyattn.load_demo()
    >>> document = encode(model, tokenizer, "the borrow checker rejects the program")
    >>> def gradient():
    ...     embeddings = model.get_input_embeddings().weight
    ...     logits = model(**document.forward_kwargs()).logits
    ...     return torch.autograd.grad(logits[0, 1], embeddings)[0]
    >>> plain = gradient()
    >>> with recomputed_layers(model):
    ...     again = gradient()
    >>> bool(torch.allclose(plain, again, atol=1e-6)), "forward" in layer_stack(model)[0].__dict__
    (True, False)
    """
    layers = layer_stack(model)
    if layers is None:
        count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        raise ModelError(f"{type(model).__name__} has no stack of {count} transformer layers (config.num_hidden_layers) to recompute")
    replaced = []
    try:
        for layer in layers:
            replaced.append((layer, layer.__dict__.get("forward", _MISSING)))
            layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
        yield model
    finally:
        for layer, previous in reversed(replaced):
            if previous is _MISSING:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = previous
