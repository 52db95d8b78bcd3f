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

from pyattn.inputs import encode, is_longformer
from pyattn.layers import (
    DEFAULT_DENSE_LIMIT_BYTES,
    AttentionReceived,
    DenseTooLarge,
    check_head_importance,
    full_attention_received,
    layer_attention_received,
    layer_index,
    layer_to_dense,
)
from pyattn.ops import attention_received

__all__ = ["ModelAttention", "attention_from_inputs", "attention", "default_global_attention_mask", "use_eager_attention"]


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
        The raw per-layer tensors; None when streamed.

    ``probabilities`` is ``logits.softmax(-1)``; :meth:`dense` gives one layer's
    dense ``(B, heads, N, N)`` attention (layers and heads numbered from 0).

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

    @property
    def probabilities(self) -> torch.Tensor:
        """``logits.softmax(-1)``: ``(B, C)``."""
        return self.logits.softmax(-1)

    def dense(self, layer: int = -1, heads: Sequence[int] | int | None = None, max_bytes: int | None = DEFAULT_DENSE_LIMIT_BYTES) -> torch.Tensor:
        """Dense attention ``(B, heads, N, N)`` of one layer (from 0; -1 the last)
        and some heads (from 0; all when None)."""
        if self.attentions is None:
            raise ValueError("this attention was streamed (stream=True), so no layer's attention was kept: run again with stream=False to get dense matrices")
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
        self.layers = model.base_model.encoder.layer
        self.n = n_tokens
        self.mask = global_attention_mask
        self.weights = head_importance
        self.per_head = per_head
        self.received: list[torch.Tensor | None] = [None] * len(self.layers)
        self.handles = []

    def __enter__(self):
        for index, layer in enumerate(self.layers):
            self.handles.append(layer.attention.self.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def _hook(self, index: int):
        def hook(module, args, output):
            if len(output) < 2:
                return output
            band = output[1].transpose(1, 2)[:, :, : self.n]  # (B, H, N, X + w + 1)
            global_attn = output[2].transpose(2, 3) if len(output) > 2 else None  # (B, H, N_pad, X)
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


@torch.no_grad()
def attention_from_inputs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_importance: torch.Tensor | None = None,
    per_head: bool = False,
    stream: bool = False,
    **model_kwargs: Any,
) -> ModelAttention:
    """Run ``model`` on ``input_ids`` ``(B, N)`` with attentions and reduce them.

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
    model.eval()
    if not is_longformer(model):
        use_eager_attention(model)  # sdpa returns no attention probabilities
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    kwargs = dict(model_kwargs, input_ids=input_ids, output_attentions=True)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device)
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
            raise ValueError(f"stream=True needs Longformer's banded attention; {type(model).__name__} has full attention")
        with _StreamingHooks(model, input_ids.shape[1], global_attention_mask, weights, per_head) as hooks:
            output = model(**kwargs)
        received = AttentionReceived(torch.stack(hooks.received), head_weighted=weights is not None, per_head=per_head)
        return ModelAttention(received, global_attention_mask, windows, output.logits)

    output = model(**kwargs)
    if output.attentions is None:
        raise ValueError(f"{type(model).__name__} returned no attentions with output_attentions=True")
    if windows is not None:
        received = layer_attention_received(output.attentions, output.global_attentions, global_attention_mask, weights, per_head)
        return ModelAttention(received, global_attention_mask, windows, output.logits, output.attentions, output.global_attentions)
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
        position_ids=document.position_ids.to(device),
    )
