"""Attention from a model: run it, collect each layer's attention and reduce it
with the compiled core.

Longformer returns per layer a band ``(B, H, N, X + w + 1)`` and global
attention ``(B, H, N_pad, X)``; models with ordinary full attention (BERT,
RoBERTa) return ``(B, H, N, N)``. Both go through the same API.

``stream=True`` (Longformer) reduces each layer's attention to attention
received inside the layer, by a forward hook on its self-attention module,
and hands the model zero-memory placeholders to collect instead of the band:
no layer's band outlives its layer, so the peak stays near a plain forward's.
"""

from __future__ import annotations

from pyattn._quiet import transformers_quiet

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from pyattn.errors import InputError, ModelError, NotADistribution  # NotADistribution defined in pyattn.errors; importable here as before 1.1
from pyattn.models.inputs import encode, is_longformer
from pyattn.kernels.layers import (
    DEFAULT_DENSE_LIMIT_BYTES,
    AttentionReceived,
    DenseTooLarge,
    check_head_importance,
    full_attention_received,
    layer_attention_received,
    layer_index,
    layer_to_dense,
)
from pyattn.kernels.ops import attention_received
from pyattn.models._checks import check_model_inputs
from pyattn.models._state import preserving

__all__ = ["ModelAttention", "attention_from_inputs", "attention", "attention_route", "ready_for_attention", "default_global_attention_mask", "use_eager_attention"]


def default_global_attention_mask(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """The global attention mask the model uses when given none:
    ``LongformerForSequenceClassification`` puts global attention on the first
    token (CLS); other Longformer heads and the base model put it nowhere.

    Parameters
    ----------
    model : torch.nn.Module
    input_ids : torch.Tensor, shape (B, N)

    Returns
    -------
    torch.Tensor, shape (B, N), like ``input_ids``, or None
        None for models without global attention.

    Examples
    --------
    >>> import torch
    >>> from pyattn import load_demo
    >>> default_global_attention_mask(load_demo()[0], torch.tensor([[0, 5, 6, 2]]))
    tensor([[1, 0, 0, 0]])
    >>> default_global_attention_mask(torch.nn.Linear(2, 2), torch.tensor([[0, 5, 6, 2]])) is None
    True
    """
    if not is_longformer(model):
        return None
    mask = torch.zeros_like(input_ids)
    if type(model).__name__ == "LongformerForSequenceClassification":
        mask[:, 0] = 1
    return mask


def use_eager_attention(model) -> None:
    """Switch a model to transformers' ``eager`` attention, the implementation
    that returns attention probabilities (``sdpa``, the default for BERT and
    RoBERTa in transformers 5, returns none). Same outputs, computed the plain
    way; the model is changed in place.

    Parameters
    ----------
    model : transformers.PreTrainedModel

    Examples
    --------
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    >>> model.config._attn_implementation
    'sdpa'
    >>> use_eager_attention(model)
    >>> model.config._attn_implementation, model(torch.tensor([[1, 2, 3]]), output_attentions=True).attentions[0].shape
    ('eager', torch.Size([1, 2, 3, 3]))
    """
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")



def _row_tolerance(dtype: torch.dtype) -> float:
    return 1e-3 if dtype in (torch.float32, torch.float64) else 3e-2


def _refuse_rows(model, layer: int, detail: str) -> None:
    name = type(model).__name__
    hint = ""
    if getattr(model.config, "attention_type", None) == "block_sparse":
        hint = " (BigBird block_sparse approximates attention over padded blocks: model.set_attention_type('original_full') explains it exactly)"
    raise NotADistribution(f"{name}'s attention is not a distribution per token: layer {layer} {detail}{hint}")


def check_full_rows(model, layer: int, probabilities: torch.Tensor, n_tokens: int, attention_mask: torch.Tensor | None) -> None:
    """Refuse (:class:`NotADistribution`) a full attention ``(B, H, N, N)``
    whose shape is not the input's or whose rows of the tokens used
    (``attention_mask`` 1) do not sum to 1."""
    if probabilities.dim() != 4 or tuple(probabilities.shape[-2:]) != (n_tokens, n_tokens):
        _refuse_rows(model, layer, f"has shape {tuple(probabilities.shape)}, expected (B, H, {n_tokens}, {n_tokens})")
    sums = probabilities.detach().float().sum(-1)  # (B, H, N)
    used = torch.ones_like(sums, dtype=torch.bool) if attention_mask is None else attention_mask.bool()[:, None, :].expand_as(sums)
    _check_sums(model, layer, sums, used, _row_tolerance(probabilities.dtype))


def _check_sums(model, layer: int, sums: torch.Tensor, used: torch.Tensor, tolerance: float) -> None:
    error = (sums - 1).abs().nan_to_num(nan=float("inf")).masked_fill(~used, 0)  # a NaN row is no distribution either
    if error.numel() and float(error.max()) > tolerance:
        b, h, i = (int(k) for k in torch.unravel_index(error.argmax(), error.shape))
        _refuse_rows(model, layer, f"head {h}: the row of token {i} sums to {float(sums[b, h, i]):.4f}, not 1")


def check_band_rows(model, layer: int, band: torch.Tensor, global_attn: torch.Tensor | None, global_mask: torch.Tensor | None,
                    attention_mask: torch.Tensor | None) -> None:
    """Longformer: refuse (:class:`NotADistribution`) a band ``(B, H, N, X + w + 1)``
    whose rows of used non-global tokens do not sum to 1, or global attention
    ``(B, H, N_pad, X)`` whose columns of each item's global tokens do not."""
    n = band.shape[2]
    tolerance = _row_tolerance(band.dtype)
    sums = band.detach().float().sum(-1)  # (B, H, N)
    used = torch.ones(sums.shape[0], n, dtype=torch.bool, device=sums.device)
    if attention_mask is not None:
        used &= attention_mask[:, :n].bool().to(used.device)
    if global_mask is not None:
        used &= ~global_mask[:, :n].bool().to(used.device)  # their rows are in global_attn
    _check_sums(model, layer, sums, used[:, None, :].expand_as(sums), tolerance)
    if global_attn is not None and global_mask is not None:
        column_sums = global_attn.detach().float().sum(-2)  # (B, H, X)
        counts = global_mask.sum(-1).to(column_sums.device)  # (B,)
        slots = torch.arange(column_sums.shape[-1], device=column_sums.device)[None, :] < counts[:, None]
        _check_sums(model, layer, column_sums, slots[:, None, :].expand_as(column_sums), tolerance)


def refuse_block_sparse(model) -> None:
    """BigBird ``block_sparse`` returns an approximation padded to its block
    size (rows summing to about 0.8), and transformers switches the model to
    ``original_full`` by itself on short inputs: refused up front, at every
    length (:class:`NotADistribution`)."""
    if getattr(getattr(model, "config", None), "attention_type", None) == "block_sparse":
        raise NotADistribution(
            f"{type(model).__name__} runs BigBird block_sparse attention, which is not a distribution per token (rows padded to its "
            "block size sum to about 0.8): call model.set_attention_type('original_full') to explain it with full attention"
        )


def _windows(model) -> list[int] | None:
    window = getattr(model.config, "attention_window", None)
    if window is None:
        return None
    layers = model.config.num_hidden_layers
    return list(window) if isinstance(window, (list, tuple)) else [int(window)] * layers


@dataclass
class ModelAttention:
    """What one forward pass said about attention (returned by
    :func:`attention` and :func:`attention_from_inputs`).

    Attributes
    ----------
    received : AttentionReceived
        Attention received per layer, ``per_layer`` ``(L, B, N)`` (or
        ``(L, B, H, N)`` per head); see :class:`pyattn.AttentionReceived`.
    global_attention_mask : torch.Tensor, shape (B, N), or None
    windows : list of int, or None
        Each layer's window; None for full attention.
    logits : torch.Tensor, shape (B, C)
    attentions, global_attentions : tuple of torch.Tensor, or None
        The raw per-layer tensors; None when streamed or read by the q/k route.
    route : str
        How attention was read: ``"qk"`` (queries and keys, the model ran its
        own fast attention), ``"eager"`` (the model's probabilities) or
        ``"band"`` (Longformer's band).
    rollout : torch.Tensor, shape (B, N), or None
        Attention rollout from the token the classifier reads (the first; a
        causal decoder's last real token), when asked for.
    output : str or None
        What the head outputs: ``"softmax"``, ``"sigmoid"`` (multi-label) or
        ``"raw"`` (regression); None for a head pyattn cannot name.

    Notes
    -----
    ``outputs`` are the head's own F (as ``output`` names it) and
    ``probabilities`` the same where they are probabilities; ``dense()``
    gives one layer's dense ``(B, heads, N, N)`` attention (layers and heads
    numbered from 0).

    Examples
    --------
    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = pyattn.attention(model, tokenizer, "the borrow checker rejects the program")
    >>> result.windows, result.logits.shape, result.received.per_layer.shape  # (L, B, N)
    ([32, 64, 128], torch.Size([1, 2]), torch.Size([3, 1, 11]))
    >>> dense = result.dense(0, heads=[0, 1])  # layer 0, heads 0 and 1: (B, heads, N, N)
    >>> dense.shape, bool(dense.sum(-1).sub(1).abs().max() < 1e-5)  # every query row is a distribution
    (torch.Size([1, 2, 11, 11]), True)
    """

    received: AttentionReceived
    global_attention_mask: torch.Tensor | None
    windows: list[int] | None
    logits: torch.Tensor
    attentions: tuple | None = None
    global_attentions: tuple | None = None
    route: str = "eager"
    rollout: torch.Tensor | None = None
    output: str | None = "softmax"  # what the head outputs (pyattn.models.inputs.output_kind); None: a head pyattn cannot name

    @property
    def outputs(self) -> torch.Tensor:
        """F of every output, ``(B, C)``: the softmax over classes, each
        label's sigmoid (multi-label) or the raw outputs (regression), as
        ``output`` names (:func:`pyattn.models.inputs.model_output`)."""
        from pyattn.models.inputs import model_output

        if self.output is None:
            raise InputError("this model's head is not one pyattn can name (see pyattn.models.inputs.output_kind): read .logits")
        return model_output(self.logits, self.output)

    @property
    def probabilities(self) -> torch.Tensor:
        """``outputs`` when they are probabilities (``output`` softmax or
        sigmoid), ``(B, C)``; a regression head's raw outputs are refused."""
        if self.output == "raw":
            raise InputError("this model has a regression head: its outputs are raw values, not probabilities (read .outputs)")
        return self.outputs

    def dense(self, layer: int = -1, heads: Sequence[int] | int | None = None, max_bytes: int | None = DEFAULT_DENSE_LIMIT_BYTES) -> torch.Tensor:
        """Dense attention ``(B, heads, N, N)`` of one layer (from 0; -1 the last)
        and some heads (from 0; all when None)."""
        if self.attentions is None and self.route == "qk":
            raise InputError("this attention was read from queries and keys (route='qk'), which keeps no probabilities: run again with route='eager' to get dense matrices")
        if self.attentions is None:
            raise InputError("this attention was streamed (stream=True), so no layer's attention was kept: run again with stream=False to get dense matrices")
        if self.windows is not None:
            return layer_to_dense(self.attentions, self.global_attentions, self.global_attention_mask, layer, heads, max_bytes)
        full = self.attentions[layer_index(layer, len(self.attentions))]
        if heads is not None:
            full = full[:, [heads] if isinstance(heads, int) else list(heads)]
        size = full.numel() * full.element_size()
        if max_bytes is not None and size > max_bytes:
            raise DenseTooLarge(f"the dense attention asked for is {size / 1024**2:,.1f} MiB, over the limit of {max_bytes / 1024**2:,.1f} MiB")
        return full


class _StreamingHooks:
    """Forward hooks on each Longformer self-attention module: reduce the
    layer's band to attention received, then swap in placeholders."""

    def __init__(self, model, n_tokens: int, global_attention_mask, head_importance, per_head: bool):
        self.model = model
        self.layers = model.base_model.encoder.layer
        self.n = n_tokens
        self.mask = global_attention_mask
        self.weights = head_importance
        self.per_head = per_head
        self.received: list[torch.Tensor | None] = [None] * len(self.layers)
        self.handles = []
        self.attention_mask = None  # rows of these tokens must sum to 1

    def __enter__(self):
        for index, layer in enumerate(self.layers):
            self.handles.append(layer.attention.self.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def _hook(self, index: int):
        module_model = self.model

        def hook(module, args, output):
            if len(output) < 2:
                return output
            band = output[1].transpose(1, 2)[:, :, : self.n]  # (B, H, N, X + w + 1)
            global_attn = output[2].transpose(2, 3) if len(output) > 2 else None  # (B, H, N_pad, X)
            check_band_rows(module_model, index, band, global_attn, self.mask, self.attention_mask)
            weights = None if self.weights is None else self.weights[index].to(band.device)
            if self.per_head:
                received = attention_received(band, global_attn, self.mask)
                if weights is not None:
                    received = received * weights.to(received)[None, :, None]
            else:
                if weights is None:
                    weights = torch.ones(band.shape[1], device=band.device)
                received = attention_received(band, global_attn, self.mask, weights)
            self.received[index] = received
            # Zero-memory stand-ins of the same shapes for the model to collect.
            placeholders = tuple(t.new_zeros(()).expand(t.shape) for t in output[1:])
            return (output[0],) + placeholders

        return hook


ROUTES = ("auto", "qk", "eager")


def check_route(route: Any, name: str = "route") -> None:
    """Refuse (:class:`InputError`, naming ``name``) a route that is not one of :data:`ROUTES`."""
    if not isinstance(route, str) or route not in ROUTES:
        raise InputError(f"{name} must be one of {', '.join(map(repr, ROUTES))}, got {route!r}")


def attention_route(model, route: str = "auto") -> str:
    """The route :func:`attention_from_inputs` takes for ``model``.

    ``"qk"``: attention received from the queries and keys each layer forms
    (:mod:`pyattn.models.qk_capture`), while the model runs its own attention (sdpa):
    no probabilities, no ``N x N``. ``"eager"``: the model's own attention
    probabilities (``output_attentions``; the reference). ``"band"``:
    Longformer's band, read directly. ``"auto"``: ``"band"`` for Longformer,
    ``"qk"`` for the models of :data:`pyattn.models.qk_capture.QK_ARCHITECTURES`,
    else ``"eager"``.

    Raises
    ------
    pyattn.errors.InputError, pyattn.errors.ModelError
        An unknown route; ``"qk"`` for a model it cannot read (the reason in one line).

    Examples
    --------
    >>> from pyattn import load_demo
    >>> attention_route(load_demo()[0])
    'band'
    """
    from pyattn.models.qk_capture import qk_refusal

    check_route(route)
    if is_longformer(model):
        if route == "qk":
            raise ModelError(qk_refusal(model))
        return "band"
    if route == "eager":
        return "eager"
    why = qk_refusal(model)
    if route == "qk" and why is not None:
        raise ModelError(why)
    return "qk" if why is None else "eager"


def ready_for_attention(model, route: str = "auto") -> str:
    """Get ``model`` ready for :func:`attention_from_inputs` by ``route`` and
    say which route that is: only the ``"eager"`` route switches the model to
    eager attention; the q/k and band routes leave it as it is.

    >>> from pyattn import load_demo
    >>> ready_for_attention(load_demo()[0])
    'band'
    """
    chosen = attention_route(model, route)
    if chosen == "eager":
        use_eager_attention(model)
    return chosen


def _rollout_starts(model, attention_mask: torch.Tensor | None, B: int, N: int, device) -> torch.Tensor:
    """Where rollout starts, per item: the token the classifier reads (the
    first; the last real token for a classifier that pools there, as
    transformers' decoder classifiers do)."""
    from pyattn.models.inputs import pools_last_non_pad

    if not pools_last_non_pad(model):
        return torch.zeros(B, dtype=torch.long, device=device)
    if attention_mask is None:
        return torch.full((B,), N - 1, dtype=torch.long, device=device)
    positions = torch.arange(N, device=device)[None, :].expand(B, N)
    return positions.masked_fill(attention_mask.to(device) == 0, -1).max(1).values


def _forward_kwargs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, model_kwargs: dict, **extra: Any) -> dict:
    """The model's forward arguments: ``input_ids`` as ``(B, N)`` and
    ``attention_mask`` (when given) on the model's device, plus
    ``model_kwargs`` and ``extra``."""
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    kwargs = dict(model_kwargs, input_ids=input_ids, **extra)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device).reshape(input_ids.shape)
    return kwargs


def _qk_attention(model, input_ids, attention_mask, head_importance, per_head: bool, rollout: bool, model_kwargs) -> ModelAttention:
    from pyattn.models.qk_capture import QKCapture, qk_rollout

    kwargs = _forward_kwargs(model, input_ids, attention_mask, model_kwargs)
    input_ids, key_mask, device = kwargs["input_ids"], kwargs.get("attention_mask"), kwargs["input_ids"].device
    model.eval()
    with QKCapture(model, key_mask, head_importance=head_importance, per_head=per_head, keep_qk=rollout) as capture:
        output = model(**kwargs)
        received = AttentionReceived(capture.received, head_weighted=head_importance is not None, per_head=per_head)
        rolled = None
        if rollout:
            B, N = input_ids.shape
            rolled = qk_rollout(capture.layers, key_mask, start=_rollout_starts(model, key_mask, B, N, device))
    return ModelAttention(received, None, None, output.logits, route="qk", rollout=rolled)


def _eager_rollout(model, result: ModelAttention, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Rollout from the model's own probabilities: banded for Longformer,
    dense (per item, over its real tokens) otherwise."""
    from pyattn.model_attention.rollout import attention_rollout, dense_rollout

    if result.windows is not None:
        return attention_rollout(result.attentions, result.global_attentions, result.global_attention_mask)
    first = result.attentions[0]
    B, N = first.shape[0], first.shape[-1]
    mask = None if attention_mask is None else attention_mask.reshape(B, N).to(first.device)
    starts = _rollout_starts(model, mask, B, N, first.device)
    out = torch.zeros(B, N, device=first.device)
    for b in range(B):
        real = torch.arange(N, device=first.device) if mask is None else mask[b].nonzero().flatten()  # any padding side
        start = int((real == starts[b]).nonzero()[0, 0])  # the start is a real token (checked before the run)
        rows = [a[b : b + 1][:, :, real][:, :, :, real].float() for a in result.attentions]
        out[b, real] = dense_rollout(rows, start=start)[0]
    return out


def _check_rollout_starts(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """Refuse a rollout that would start where ``attention_mask`` marks padding (:func:`_rollout_starts`)."""
    if attention_mask is None:
        return
    B, N = (1, input_ids.shape[0]) if input_ids.dim() == 1 else tuple(input_ids.shape)
    mask = attention_mask.reshape(B, N)
    starts = _rollout_starts(model, mask, B, N, mask.device)
    for b in range(B):
        if not bool(mask[b, starts[b]]):
            raise InputError(f"rollout=True starts at token {int(starts[b])}, the one {type(model).__name__} classifies from, "
                             f"but attention_mask[{b}] marks it as padding: pad on the right for this model")


@preserving()
def attention_from_inputs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_importance: torch.Tensor | None = None,
    per_head: bool = False,
    stream: bool = False,
    route: str = "auto",
    rollout: bool = False,
    **model_kwargs: Any,
) -> ModelAttention:
    """Run ``model`` on ``input_ids`` ``(B, N)`` and reduce its attention to
    attention received per layer.

    ``route`` (see :func:`attention_route`): ``"auto"`` reads queries and
    keys (``"qk"``) for the architectures of
    :data:`pyattn.models.qk_capture.QK_ARCHITECTURES` while the model runs its own
    attention, Longformer's band directly, and any other model's eager
    probabilities; ``"eager"`` asks for the model's probabilities (the
    reference; the model is switched to eager attention). ``rollout=True``
    adds :attr:`ModelAttention.rollout`. The model's training flag is as
    before afterwards, also after an error.

    For Longformer, ``global_attention_mask`` None means the model's own
    default (CLS for sequence classification), made explicit so the kernels
    and the model agree. ``head_importance`` ``(L, H)`` scales each head.
    ``stream=True`` (Longformer only) keeps no layer's attention.

    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> ids = tokenizer("gradient descent", return_tensors="pt")["input_ids"]  # (B, N)
    >>> attention_from_inputs(model, ids).received.per_layer.shape[:2]  # (L, B, N)
    torch.Size([3, 1])
    """
    from pyattn.models.inputs import output_kind

    chosen = attention_route(model, route)
    check_model_inputs(model, input_ids, attention_mask, global_attention_mask)
    if rollout:
        _check_rollout_starts(model, input_ids, attention_mask)
    try:
        kind = output_kind(model)
    except ValueError:  # a head attribution refuses: its attention can still be read
        kind = None
    training = model.training
    try:
        if chosen == "qk":
            if stream:
                raise InputError(f"stream=True needs Longformer's banded attention; {type(model).__name__} takes the q/k route, which keeps no layer's attention anyway")
            with torch.no_grad():
                result = _qk_attention(model, input_ids, attention_mask, head_importance, per_head, rollout, model_kwargs)
            result.output = kind
            return result
        result = _probabilities_attention(model, input_ids, attention_mask, global_attention_mask, head_importance, per_head, stream, **model_kwargs)
        result.route = "band" if result.windows is not None else "eager"
        result.output = kind
        if rollout:
            if result.attentions is None:
                raise InputError("rollout=True needs the layers' attention: drop stream=True")
            with torch.no_grad():
                result.rollout = _eager_rollout(model, result, attention_mask)
        return result
    finally:
        model.train(training)


@torch.no_grad()
def _probabilities_attention(model, input_ids, attention_mask, global_attention_mask, head_importance, per_head: bool, stream: bool,
                             **model_kwargs: Any) -> ModelAttention:
    """The ``"eager"`` and ``"band"`` routes of :func:`attention_from_inputs`
    (arguments as there, all given, already checked): run ``model`` on
    ``input_ids`` ``(B, N)`` with attentions and reduce them."""
    refuse_block_sparse(model)
    model.eval()
    if not is_longformer(model):
        use_eager_attention(model)  # sdpa returns no attention probabilities
    kwargs = _forward_kwargs(model, input_ids, attention_mask, model_kwargs, output_attentions=True)
    input_ids, device = kwargs["input_ids"], kwargs["input_ids"].device
    windows = _windows(model)
    if windows is not None:
        if global_attention_mask is None:
            global_attention_mask = default_global_attention_mask(model, input_ids)
        global_attention_mask = global_attention_mask.to(device)
        kwargs["global_attention_mask"] = global_attention_mask
    heads = model.config.num_attention_heads
    weights = check_head_importance(head_importance, model.config.num_hidden_layers, heads)

    if stream:
        if windows is None:
            raise InputError(f"stream=True needs Longformer's banded attention; {type(model).__name__} has full attention")
        with _StreamingHooks(model, input_ids.shape[1], global_attention_mask, weights, per_head) as hooks:
            hooks.attention_mask = kwargs.get("attention_mask")
            output = model(**kwargs)
        received = AttentionReceived(torch.stack(hooks.received), head_weighted=weights is not None, per_head=per_head)
        return ModelAttention(received, global_attention_mask, windows, output.logits)

    output = model(**kwargs)
    if output.attentions is None:
        raise ModelError(f"{type(model).__name__} returned no attentions with output_attentions=True")
    if windows is not None:
        for layer, band in enumerate(output.attentions):
            global_attn = output.global_attentions[layer] if output.global_attentions is not None else None
            check_band_rows(model, layer, band, global_attn, global_attention_mask, kwargs.get("attention_mask"))
        received = layer_attention_received(output.attentions, output.global_attentions, global_attention_mask, weights, per_head)
        return ModelAttention(received, global_attention_mask, windows, output.logits, output.attentions, output.global_attentions)
    for layer, probabilities in enumerate(output.attentions):  # one distribution per used row, or refused
        check_full_rows(model, layer, probabilities, input_ids.shape[1], kwargs.get("attention_mask"))
    received = full_attention_received(output.attentions, weights, per_head, kwargs.get("attention_mask"))
    return ModelAttention(received, None, None, output.logits, output.attentions, None)


@transformers_quiet()
def attention(
    model: torch.nn.Module,
    tokenizer,
    text: str,
    max_length: int | None = None,
    head_importance: torch.Tensor | None = None,
    per_head: bool = False,
    stream: bool = False,
    route: str = "auto",
    rollout: bool = False,
) -> ModelAttention:
    """:func:`attention_from_inputs` on one text encoded exactly as
    :func:`pyattn.attribute` encodes it, so positions line up with its scores.

    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = pyattn.attention(model, tokenizer, "gradient descent on a neural network", per_head=True)
    >>> result.received.per_layer.shape[:3]  # (L, B, H, N): layers, batch, heads, tokens
    torch.Size([3, 1, 4])
    """
    document = encode(model, tokenizer, text, max_length)
    device = next(model.parameters()).device
    return attention_from_inputs(
        model,
        document.input_ids.to(device),
        attention_mask=document.attention_mask.to(device),
        global_attention_mask=None if document.global_attention_mask is None else document.global_attention_mask.to(device),
        head_importance=head_importance,
        per_head=per_head,
        stream=stream,
        route=route,
        rollout=rollout,
        position_ids=document.position_ids.to(device),
    )
