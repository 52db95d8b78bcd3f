"""Head importance, ``(L, H)``: how much each attention head matters to the
model's loss on a dataset.

- :func:`taylor_importance`, as T3-Vis computes it: per head, the sum of
  ``(gradient x parameter)^2`` over the head's rows of the query, key and value
  weights and biases and its columns of the attention output weight,
  accumulated over the dataset (one backward pass per document, squares
  summed), then min-max normalised over all layers x heads. Longformer's
  ``query_global`` / ``key_global`` / ``value_global`` are left out by default,
  as T3-Vis did; ``include_global=True`` adds them.
- :func:`head_gate_importance`, Michel et al. (2019): a gate ``g_h = 1``
  multiplies each head's output; importance is ``|dL/dg_h|`` per document,
  summed, then L2-normalised within each layer. transformers 5 no longer takes
  ``head_mask`` for Longformer (the argument is ignored and no gradient
  arrives), so the gates go in with forward hooks on the self-attention
  modules.

Both read the model's attention modules at ``base_model.encoder.layer[l]
.attention.self`` (``query``, ``key``, ``value``) and ``.attention.output
.dense``: the layout of BERT, RoBERTa and Longformer.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import torch

from pyattn.models.fast_attention import fast_attention_context
from pyattn.models.inputs import encode
from pyattn._checks import whole_label
from pyattn.models._state import preserving
from pyattn.errors import InputError, ModelError

__all__ = [
    "taylor_importance",
    "head_gate_importance",
    "save_head_importance",
    "load_head_importance",
]


def _attention_layers(model) -> list:
    try:
        layers = list(model.base_model.encoder.layer)
        for layer in layers:
            layer.attention.self.query, layer.attention.output.dense  # noqa: B018
    except AttributeError as error:
        raise ModelError(
            f"{type(model).__name__} does not have the BERT/RoBERTa/Longformer layout "
            "(base_model.encoder.layer[l].attention.self.query / .attention.output.dense) "
            "that head importance reads"
        ) from error
    return layers


def _documents(model, tokenizer, texts: Iterable[str], labels: Sequence[int], max_length):
    texts = list(texts)
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise TypeError(f"labels must be a sequence of class indices, one per text, got {type(labels).__name__}")
    if len(texts) != len(labels):
        raise InputError(f"got {len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise InputError("head importance needs at least one labelled document")
    num_classes = getattr(getattr(model, "config", None), "num_labels", None)
    labels = [whole_label(label, index, num_classes) for index, label in enumerate(labels)]  # all checked before any work
    for text, label in zip(texts, labels):
        yield encode(model, tokenizer, text, max_length), label


def _loss(model, document, label: int, device) -> torch.Tensor:
    kwargs = {k: v.to(device) for k, v in document.forward_kwargs().items()}
    logits = model(**kwargs).logits
    return torch.nn.functional.cross_entropy(logits, torch.tensor([label], device=device))


@preserving(gradients=True)
def taylor_importance(
    model,
    tokenizer,
    texts: Iterable[str],
    labels: Sequence[int],
    include_global: bool = False,
    max_length: int | None = None,
    normalise: bool = True,
    progress: bool = True,
    fast_attention: bool | None = None,
) -> torch.Tensor:
    """T3-Vis Taylor head importance over a labelled dataset: ``(L, H)``,
    min-max normalised to [0, 1] over all heads unless ``normalise=False``.
    ``fast_attention`` (None: on for Longformer) runs the gradients through
    :func:`pyattn.models.fast_attention.fast_longformer_attention`, equal to
    transformers' attention (tested).

    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> taylor_importance(model, tokenizer, ["gradient descent on a neural network"], [0], progress=False).shape  # (L, H)
    torch.Size([3, 4])
    """
    from tqdm.auto import tqdm

    layers = _attention_layers(model)
    heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // heads
    device = next(model.parameters()).device
    projections = ["query", "key", "value"] + (["query_global", "key_global", "value_global"] if include_global else [])
    if include_global and not hasattr(layers[0].attention.self, "query_global"):
        raise ModelError(f"include_global=True needs Longformer's *_global projections; {type(model).__name__} has none")
    scores = torch.zeros(len(layers), heads, dtype=torch.float64)
    model.eval()
    documents = list(_documents(model, tokenizer, texts, labels, max_length))
    # Frozen models too: the projections read need their gradients (put back
    # as found on the way out, with the user's own .grad tensors).
    for layer in layers:
        for linear in [getattr(layer.attention.self, name) for name in projections] + [layer.attention.output.dense]:
            linear.requires_grad_(True)
    for document, label in tqdm(documents, desc="taylor importance", unit="doc", disable=not progress):
        model.zero_grad(set_to_none=True)
        with fast_attention_context(model, fast_attention):
            _loss(model, document, label, device).backward()
        with torch.no_grad():
            _accumulate_taylor(scores, layers, projections, heads, head_dim)
    model.zero_grad(set_to_none=True)
    if normalise:
        low, high = scores.min(), scores.max()
        scores = (scores - low) / (high - low) if high > low else torch.zeros_like(scores)
    return scores.float()


def _accumulate_taylor(scores, layers, projections, heads: int, head_dim: int) -> None:
    """Add each head's sum of (grad x param)^2 to scores (L, H)."""
    for index, layer in enumerate(layers):
        for name in projections:
            linear = getattr(layer.attention.self, name)
            weight = (linear.weight.grad * linear.weight).double() ** 2  # (hidden, hidden): rows per head
            scores[index] += weight.view(heads, head_dim, -1).sum((1, 2)).cpu()
            if linear.bias is not None:
                bias = (linear.bias.grad * linear.bias).double() ** 2
                scores[index] += bias.view(heads, head_dim).sum(1).cpu()
        dense = layer.attention.output.dense
        columns = (dense.weight.grad * dense.weight).double() ** 2  # (hidden, hidden): columns per head
        scores[index] += columns.view(-1, heads, head_dim).sum((0, 2)).cpu()


class _HeadGates:
    """Per-layer gates (B, H) multiplying each head's self-attention output."""

    def __init__(self, layers, heads: int, batch: int, device):
        self.gates = [torch.ones(batch, heads, device=device, requires_grad=True) for _ in layers]
        self.layers = layers
        self.heads = heads
        self.handles = []

    def __enter__(self):
        for layer, gate in zip(self.layers, self.gates):
            self.handles.append(layer.attention.self.register_forward_hook(self._hook(gate)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def _hook(self, gate):
        heads = self.heads

        def hook(module, args, output):
            context = output[0] if isinstance(output, tuple) else output  # (B, N, hidden)
            B, N, hidden = context.shape
            gated = (context.view(B, N, heads, hidden // heads) * gate[:, None, :, None].to(context.dtype)).view(B, N, hidden)
            return (gated,) + tuple(output[1:]) if isinstance(output, tuple) else gated

        return hook


@preserving(gradients=True)
def head_gate_importance(
    model,
    tokenizer,
    texts: Iterable[str],
    labels: Sequence[int],
    max_length: int | None = None,
    normalise_layers: bool = True,
    progress: bool = True,
    fast_attention: bool | None = None,
) -> torch.Tensor:
    """Michel et al. (2019) head importance: ``(L, H)``, the sum over
    documents of ``|dL/dg_h|``, L2-normalised within each layer unless
    ``normalise_layers=False``. ``fast_attention`` as in
    :func:`taylor_importance`.

    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> head_gate_importance(model, tokenizer, ["gradient descent on a neural network"], [0], progress=False).shape
    torch.Size([3, 4])
    """
    from tqdm.auto import tqdm

    layers = _attention_layers(model)
    heads = model.config.num_attention_heads
    device = next(model.parameters()).device
    scores = torch.zeros(len(layers), heads, dtype=torch.float64)
    model.eval()
    documents = list(_documents(model, tokenizer, texts, labels, max_length))
    for document, label in tqdm(documents, desc="head-gate importance", unit="doc", disable=not progress):
        with fast_attention_context(model, fast_attention), _HeadGates(layers, heads, 1, device) as gates:
            loss = _loss(model, document, label, device)
            grads = torch.autograd.grad(loss, gates.gates)
        scores += torch.stack([g[0].abs().double().cpu() for g in grads])
    if normalise_layers:
        norms = scores.norm(dim=1, keepdim=True)
        scores = torch.where(norms > 0, scores / norms.clamp_min(1e-300), scores)
    return scores.float()


#: What :func:`save_head_importance` and :func:`load_head_importance` say
#: about a table that is not an (L, H) array of finite, non-negative numbers
#: (:func:`_check_table`); the same checks, so what is saved loads back.
_SAVE_REFUSALS = {
    "shape": "head importance must be 2-D (L, H), got shape {shape}",
    "empty": "head importance must be (L, H) with L, H >= 1, got shape {shape}",
    "non_finite": "head importance holds {non_finite} non-finite value(s) (NaN or inf): it could not be loaded back",
    "negative": "head importance must be >= 0, got a minimum of {minimum:g}: it could not be loaded back",
}
_LOAD_REFUSALS = {
    "shape": "{path!r} holds an array of shape {shape}; head importance must be 2-D (L, H)",
    "empty": "{path!r} holds an empty array of shape {shape}; head importance must be (L, H) with L, H >= 1",
    "non_finite": "{path!r} holds {non_finite} non-finite value(s) (NaN or inf); head importance must be finite",
    "negative": "{path!r} holds negative value(s) (min {minimum:g}); head importance must be >= 0",
}


def _check_table(importance: torch.Tensor, refusals: dict[str, str], path: str | None = None) -> None:
    """A ValueError worded by ``refusals`` unless ``importance`` is 2-D,
    non-empty, finite and non-negative."""
    finite = torch.isfinite(importance)
    problem = ("shape" if importance.dim() != 2 else "empty" if importance.numel() == 0
               else "non_finite" if not finite.all() else "negative" if (importance < 0).any() else None)
    if problem is not None:
        minimum = float(importance.min()) if problem == "negative" else None
        raise InputError(refusals[problem].format(shape=tuple(importance.shape), non_finite=int((~finite).sum()), minimum=minimum, path=path))


def save_head_importance(importance: torch.Tensor, path: str | os.PathLike) -> None:
    """Save an ``(L, H)`` importance as ``.pt`` (a tensor) or ``.npy``.

    Parameters
    ----------
    importance : array-like, shape (L, H)
        Finite and non-negative, as :func:`load_head_importance` requires.
    path : str or os.PathLike
        Ends in ``.pt`` or ``.npy``.

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. For another shape, an empty, non-finite or negative importance (which
        could not be loaded back), or another file type.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "importance.npy")
    ...     save_head_importance(torch.rand(3, 4), path)
    ...     load_head_importance(path).shape
    torch.Size([3, 4])
    >>> save_head_importance(torch.tensor([[0.5, -1.0]]), "importance.pt")
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: head importance must be >= 0, got a minimum of -1: it could not be loaded back
    """
    path = os.fspath(path)
    if not path.endswith((".npy", ".pt")):
        raise InputError(f"unknown head-importance file type for {path!r}: use .pt or .npy")
    name = os.path.basename(path)
    if name in (".pt", ".npy"):
        raise InputError(f"head-importance file {path!r} has no name before {name!r}: give a name such as importance{name}")
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise InputError(f"head-importance file {path!r}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"head-importance file {path!r} is a folder; give a file name")
    if isinstance(importance, torch.Tensor) and importance.is_meta:
        raise InputError("head importance is a meta tensor (shape only, no values): there is nothing to save")
    importance = torch.as_tensor(importance).detach().cpu()
    _check_table(importance, _SAVE_REFUSALS)
    if path.endswith(".npy"):
        np.save(path, importance.numpy())
    elif path.endswith(".pt"):
        torch.save(importance, path)
    else:
        raise InputError(f"unknown head-importance file type for {path!r}: use .pt or .npy")


def load_head_importance(path: str | os.PathLike, model=None) -> torch.Tensor:
    """Load an ``(L, H)`` head importance saved by :func:`save_head_importance`.

    ``.pt`` files are read with ``weights_only=True`` (a tensor or array, no
    code) and ``.npy`` files without pickles; with ``model``, the shape is
    checked against the model's layers and heads. A file that is not such an
    array (garbage, a pickle of anything else), or whose values are not all
    finite and non-negative, raises a one-line ``ValueError`` naming it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pt`` or ``.npy`` file.
    model : optional
        A model whose ``config.num_hidden_layers`` x
        ``config.num_attention_heads`` the shape must match.

    Returns
    -------
    torch.Tensor
        ``(L, H)`` float32.

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. For a file that is not such an array, a shape that does not fit the
        model, or values that are not all finite and non-negative.

    Examples
    --------
    >>> import os, tempfile, torch, pyattn
    >>> model, _ = pyattn.load_demo()  # 3 layers x 4 heads
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "importance.pt")
    >>> save_head_importance(torch.tensor([[0.5, 1.0, 0.0, 2.0]] * 3), path)
    >>> load_head_importance(path, model=model)[0]  # layer 0
    tensor([0.5000, 1.0000, 0.0000, 2.0000])
    >>> save_head_importance(torch.ones(2, 4), path)
    >>> load_head_importance(path, model=model)
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: '...importance.pt' holds head importance of shape (2, 4) but the model has 3 layers x 4 heads
    >>> folder.cleanup()
    """
    import pickle
    import zipfile

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"head-importance file {path!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"head-importance file {path!r} is a folder")
    try:
        if path.endswith(".npy"):
            importance = torch.from_numpy(np.array(np.load(path, allow_pickle=False), dtype=np.float64))
        elif path.endswith(".pt"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, torch.Tensor):
                importance = loaded.detach().to(torch.float64)
            else:
                importance = torch.from_numpy(np.array(loaded, dtype=np.float64))
        else:
            raise InputError(f"unknown head-importance file type for {path!r}: use .pt or .npy")
    except ValueError as error:
        if "unknown head-importance" in str(error):
            raise
        raise InputError(f"{path!r} is not a head-importance array: it does not hold an (L, H) array of numbers") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, TypeError, AttributeError, KeyError, IndexError):
        raise InputError(
            f"{path!r} is not a head-importance array: not a tensor file pyattn can read safely "
            "(garbage, truncated, or a pickle with unsupported contents; pyattn never runs pickled code)"
        ) from None
    _check_table(importance, _LOAD_REFUSALS, path=path)
    importance = importance.float()
    if model is not None:
        expected = (model.config.num_hidden_layers, model.config.num_attention_heads)
        if tuple(importance.shape) != expected:
            raise InputError(
                f"{path!r} holds head importance of shape {tuple(importance.shape)} but the model has "
                f"{expected[0]} layers x {expected[1]} heads"
            )
    return importance
