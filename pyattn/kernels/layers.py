"""Layers: a model's attention outputs, every layer, reduced to attention
received per token (and, on request, one layer's dense matrix).

The ladder of attention received, one home per rung:

- :mod:`pyattn.kernels.ops`: one layer's band (or all layers in one call), the
  compiled kernels;
- this module: a model *output* (``output.attentions`` and, for Longformer,
  ``output.global_attentions``), any attention kind: Longformer's banded
  attention through the ops (:func:`layer_attention_received`), ordinary full
  ``(B, H, N, N)`` attention by column sums over the real rows
  (:func:`full_attention_received`);
- :mod:`pyattn.model_attention`: text (or input ids) through the model.

A Longformer model called with ``output_attentions=True`` returns per layer
``attentions[l]`` ``(B, H, N, X + w_l + 1)`` (windows may differ per layer, so
the tuple cannot always be stacked) and ``global_attentions[l]``
``(B, H, N_pad, X)``, or ``global_attentions=None`` when no token is global.

Layers and heads are numbered from 0, as the tensors index them (layer 11 is
the last of a 12-layer model; the original notebooks' "layer 12"); negative
numbers count from the end (``-1`` is the last layer); ranges are inclusive
(``"6-11"`` is the upper half of a 12-layer model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from pyattn.errors import DenseTooLarge, InputError  # defined in pyattn.errors; importable here as before 1.1
from pyattn.kernels.ops import attention_received_layers, band_to_dense
from pyattn._checks import head_importance_tensor, require_tensor_sequence

__all__ = [
    "AttentionReceived",
    "DenseTooLarge",
    "DEFAULT_DENSE_LIMIT_BYTES",
    "check_head_importance",
    "full_attention_received",
    "layer_attention_received",
    "layer_index",
    "layer_to_dense",
    "layers_of",
    "parse_layer_range",
]

#: Default cap on the output of :func:`layer_to_dense` (2 GiB).
DEFAULT_DENSE_LIMIT_BYTES = 2 * 1024**3



def layers_of(attentions: Any, global_attentions: Any) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Normalise model-output forms into per-layer lists.

    Parameters
    ----------
    attentions : model output, sequence of torch.Tensor, or torch.Tensor
        A model output with ``attentions`` (and ``global_attentions``), a tuple
        of per-layer ``(B, H, N, K)`` tensors, or one stacked ``(L, B, H, N, K)``
        tensor.
    global_attentions : same forms, or None
        Longformer's global attentions, one per layer; None for full attention
        (or when ``attentions`` is a model output, which carries them).

    Returns
    -------
    local : list of torch.Tensor
        L tensors.
    glob : list of torch.Tensor or None
        L entries (all None without global attentions).

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. If there are no attentions, or the two have different layer counts.

    Examples
    --------
    >>> import torch
    >>> local, glob = layers_of(torch.zeros(3, 1, 2, 4, 5), None)  # stacked (L, B, H, N, K)
    >>> len(local), local[0].shape, glob
    (3, torch.Size([1, 2, 4, 5]), [None, None, None])
    """
    if hasattr(attentions, "attentions"):  # a model output object
        output = attentions
        attentions = output.attentions
        if global_attentions is None:
            global_attentions = getattr(output, "global_attentions", None)
    if attentions is None:
        raise InputError(
            "no attentions were given: run the model with output_attentions=True "
            "and pass output.attentions (and output.global_attentions)"
        )
    if not isinstance(attentions, torch.Tensor):
        require_tensor_sequence("attentions", attentions, "(B, H, N, K)")
    local = list(attentions.unbind(0)) if isinstance(attentions, torch.Tensor) else list(attentions)
    if not local:
        raise InputError("attentions is empty: expected one (B, H, N, X + w + 1) tensor per layer")
    if global_attentions is None:
        glob: list[torch.Tensor | None] = [None] * len(local)
    else:
        if not isinstance(global_attentions, torch.Tensor):
            require_tensor_sequence("global_attentions", global_attentions, "(B, H, N_pad, X)", allow_none=True)
        glob = list(global_attentions.unbind(0)) if isinstance(global_attentions, torch.Tensor) else list(global_attentions)
        if len(glob) != len(local):
            raise InputError(
                f"attentions has {len(local)} layers but global_attentions has {len(glob)}; "
                "pass both tuples from the same model output"
            )
    return local, glob


def layer_index(layer: int, num_layers: int) -> int:
    """Layer number (from 0, or negative from the end) -> index from 0.

    Parameters
    ----------
    layer : int
    num_layers : int

    Returns
    -------
    int
        In ``0 .. num_layers - 1``.

    Raises
    ------
    TypeError
        If ``layer`` is not an int.
    IndexError
        If it is out of range.

    Examples
    --------
    >>> layer_index(0, 12), layer_index(-1, 12), layer_index(-12, 12)
    (0, 11, 0)
    >>> layer_index(12, 12)
    Traceback (most recent call last):
    ...
    IndexError: layer 12 is out of range: layers are numbered 0..11 (or -1..-12 from the end)
    """
    if not isinstance(layer, (int,)) or isinstance(layer, bool):
        raise TypeError(f"layer must be an int (0..{num_layers - 1}, or -1 for the last), got {layer!r}")
    if 0 <= layer < num_layers:
        return layer
    if -num_layers <= layer <= -1:
        return num_layers + layer
    raise IndexError(f"layer {layer} is out of range: layers are numbered 0..{num_layers - 1} (or -1..-{num_layers} from the end)")


def check_head_importance(head_importance: torch.Tensor | None, num_layers: int, num_heads: int) -> torch.Tensor | None:
    """Check that a head-importance table matches the model's layers and heads.

    Parameters
    ----------
    head_importance : array-like, shape (L, H), or None
    num_layers, num_heads : int
        L and H of the model.

    Returns
    -------
    torch.Tensor, shape (L, H), or None (when given None)

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. If the shape is not ``(num_layers, num_heads)``, a value is NaN,
        infinite or negative, or the tensor is meta or requires grad.
    TypeError
        If it is not an array of numbers.

    Examples
    --------
    >>> check_head_importance([[0.5, 1.0, 2.0]], 1, 3)
    tensor([[0.5000, 1.0000, 2.0000]])
    >>> check_head_importance([[0.5, 1.0]], 1, 3)
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: head_importance must have shape (L, H) = (1, 3) to match the model's layers and heads, got (1, 2)
    """
    if head_importance is None:
        return None
    head_importance_tensor(head_importance)  # numbers, finite, >= 0, real values outside autograd
    head_importance = torch.as_tensor(head_importance)
    if tuple(head_importance.shape) != (num_layers, num_heads):
        raise InputError(
            f"head_importance must have shape (L, H) = ({num_layers}, {num_heads}) "
            f"to match the model's layers and heads, got {tuple(head_importance.shape)}"
        )
    return head_importance


def parse_layer_range(text: str, num_layers: int) -> tuple[int, int]:
    """``"6-11"`` -> ``(6, 11)``; ``"3"`` -> ``(3, 3)``. Layers are numbered
    from 0 and must lie in ``0..num_layers - 1``; the range must not be empty.

    >>> parse_layer_range("6-11", 12)
    (6, 11)
    """
    text = str(text).strip()
    parts = text.split("-")
    try:
        if len(parts) == 1:
            first = last = int(parts[0])
        elif len(parts) == 2:
            first, last = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise InputError(f"layer range {text!r} is not understood: expected FIRST-LAST or one layer, numbered from 0 (e.g. 0-5)") from None
    for value in (first, last):
        if not 0 <= value < num_layers:
            raise InputError(f"layer range {text!r}: layer {value} does not exist; layers are numbered 0..{num_layers - 1}")
    if first > last:
        raise InputError(f"layer range {text!r} is empty: first must not come after last")
    return first, last


@dataclass
class AttentionReceived:
    """Attention received per token, per layer (returned by
    :func:`layer_attention_received` and :func:`full_attention_received`).

    Attributes
    ----------
    per_layer:
        ``(L, B, N)``: heads summed (weighted by head importance when
        ``head_weighted``), or ``(L, B, H, N)`` when ``per_head``.
    head_weighted:
        Whether heads were scaled by head importance.
    per_head:
        Whether the head dimension was kept.

    Notes
    -----
    Layers are numbered from 0 (negative from the end); ranges are inclusive.
    :meth:`select` takes ``"final"``, ``"all"``, a layer number, ``"0-1"`` or
    ``(0, 1)``.

    Examples
    --------
    >>> import torch
    >>> band = torch.full((1, 1, 4, 3), 1 / 3)  # B=1, H=1, N=4, window 2
    >>> received = layer_attention_received([band, 2 * band])
    >>> received.num_layers, received.per_layer.shape
    (2, torch.Size([2, 1, 4]))
    >>> received.final_layer
    tensor([[1.3333, 2.0000, 2.0000, 1.3333]])
    >>> received.select("all")  # the two layers summed
    tensor([[2., 3., 3., 2.]])
    >>> torch.equal(received.select("0-1"), received.all_layers), torch.equal(received.select(0), received.per_layer[0])
    (True, True)
    """

    per_layer: torch.Tensor
    head_weighted: bool
    per_head: bool

    @property
    def num_layers(self) -> int:
        """L, the number of layers."""
        return self.per_layer.shape[0]

    @property
    def final_layer(self) -> torch.Tensor:
        """The last layer: ``(B, N)`` (``(B, H, N)`` per head)."""
        return self.per_layer[-1]

    @property
    def all_layers(self) -> torch.Tensor:
        """Sum over all layers: ``(B, N)`` (``(B, H, N)`` per head)."""
        return self.per_layer.sum(0)

    def layer_range(self, first: int, last: int) -> torch.Tensor:
        """Sum over layers ``first..last``, numbered from 0 and inclusive
        (``(0, 5)`` is the lower half of a 12-layer model)."""
        lo, hi = layer_index(first, self.num_layers), layer_index(last, self.num_layers)
        if lo > hi:
            raise InputError(f"layer range {first}-{last} is empty: first must not come after last")
        return self.per_layer[lo : hi + 1].sum(0)

    def select(self, layers: str | int | tuple[int, int]) -> torch.Tensor:
        """``"final"``, ``"all"``, a layer number (from 0, negative from the
        end; ``-1`` and ``"-1"`` alike), ``"6-11"`` or ``(6, 11)`` (inclusive)."""
        if isinstance(layers, str):
            name = layers.strip().lower()
            if name in ("final", "last"):
                return self.final_layer
            if name == "all":
                return self.all_layers
            try:
                layers = int(name)  # one layer, written as a number: "2", "-1"
            except ValueError:
                first, last = parse_layer_range(name, self.num_layers)
                return self.layer_range(first, last)
        if isinstance(layers, tuple):
            return self.layer_range(*layers)
        return self.per_layer[layer_index(layers, self.num_layers)]


def layer_attention_received(
    attentions: Sequence[torch.Tensor] | torch.Tensor | Any,
    global_attentions: Sequence[torch.Tensor] | torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_importance: torch.Tensor | None = None,
    per_head: bool = False,
) -> AttentionReceived:
    """Attention received per token for every layer of a Longformer output.

    Parameters
    ----------
    attentions:
        ``output.attentions``: L tensors ``(B, H, N, X + w_l + 1)`` (or the
        model output itself).
    global_attentions:
        ``output.global_attentions``: L tensors ``(B, H, N_pad, X)``, or None
        when no token is global.
    global_attention_mask:
        ``(B, N)``, the mask the model ran with (including the CLS token that
        ``LongformerForSequenceClassification`` makes global by itself).
    head_importance:
        ``(L, H)``, optional: each head's contribution is scaled by it.
    per_head:
        Keep the head dimension.

    Returns
    -------
    AttentionReceived
        ``per_layer`` ``(L, B, N)``, or ``(L, B, H, N)`` with ``per_head``;
        ``final_layer``, ``all_layers`` and ``layer_range(first, last)``.
        float32 for float16/bfloat16 attentions, else their dtype. All layers
        go through one call of :func:`pyattn.kernels.ops.attention_received_layers`
        (no host synchronisation on CUDA).

    >>> band = torch.full((1, 1, 4, 3), 1 / 3)  # one layer's band: B=1, H=1, N=4, window 2
    >>> layer_attention_received([band, band]).per_layer.shape  # (L, B, N)
    torch.Size([2, 1, 4])
    """
    local, glob = layers_of(attentions, global_attentions)
    num_heads = local[0].shape[1] if local[0].dim() == 4 else -1
    weights = check_head_importance(head_importance, len(local), num_heads)
    device = local[0].device
    # One call for all layers (no host synchronisation on CUDA).
    if per_head:
        received = attention_received_layers(local, glob, global_attention_mask)
        if weights is not None:
            received = received * weights.to(received)[:, None, :, None]
    else:
        fused = torch.ones(len(local), num_heads, device=device) if weights is None else weights.to(device)
        received = attention_received_layers(local, glob, global_attention_mask, fused)
    return AttentionReceived(received, head_weighted=weights is not None, per_head=per_head)


def full_attention_received(attentions, head_importance, per_head: bool, attention_mask: torch.Tensor | None = None) -> AttentionReceived:
    """Attention received from ordinary full attention (BERT, RoBERTa):
    column sums of each layer's ``(B, H, N, N)`` matrix over the rows of real
    tokens. A padding position's query row (which the model computes but
    nobody reads) is not counted, as for Longformer, whose padding rows are
    zero.

    Parameters
    ----------
    attentions:
        ``output.attentions``: L tensors ``(B, H, N, N)``.
    head_importance:
        ``(L, H)``, optional: each head scaled by it.
    per_head:
        Keep the head dimension.
    attention_mask:
        ``(B, N)``, 1 for real tokens; None counts every row.

    Returns
    -------
    AttentionReceived
        ``per_layer`` ``(L, B, N)`` or ``(L, B, H, N)``, float32.

    >>> A = torch.full((1, 1, 2, 2), 0.5)
    >>> full_attention_received([A], None, False).per_layer.tolist()
    [[[1.0, 1.0]]]
    """
    weights = check_head_importance(head_importance, len(attentions), attentions[0].shape[1])
    rows = None
    if attention_mask is not None:
        rows = attention_mask.to(device=attentions[0].device, dtype=torch.float32)[:, None, :, None]  # (B, 1, N, 1)
    out = []
    for index, full in enumerate(attentions):
        full = full.float()
        received = (full * rows).sum(2) if rows is not None else full.sum(2)  # (B, H, N)
        if weights is not None:
            received = received * weights[index].to(received)[None, :, None]
        out.append(received if per_head else received.sum(1))
    return AttentionReceived(torch.stack(out), head_weighted=weights is not None, per_head=per_head)


def layer_to_dense(
    attentions: Sequence[torch.Tensor] | torch.Tensor | Any,
    global_attentions: Sequence[torch.Tensor] | torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    layer: int = -1,
    heads: Sequence[int] | int | None = None,
    max_bytes: int | None = DEFAULT_DENSE_LIMIT_BYTES,
) -> torch.Tensor:
    """The dense attention of one layer (optionally some heads).

    Returns ``(B, len(heads), N, N)`` (all heads when ``heads`` is None).
    Refuses, with :class:`DenseTooLarge`, an output over ``max_bytes``
    (default 2 GiB; ``None`` lifts the limit): 12 heads x 4096^2 float32 is
    805 MB for one layer of one document.

    >>> band = torch.full((1, 1, 4, 3), 1 / 3)
    >>> layer_to_dense([band, band], layer=-1).shape  # (B, heads, N, N)
    torch.Size([1, 1, 4, 4])
    """
    local, glob = layers_of(attentions, global_attentions)
    index = layer_index(layer, len(local))
    band, global_attn = local[index], glob[index]
    if band.dim() != 4:
        raise InputError(f"layer {index}: attentions must be 4-D (B, H, N, X + w + 1), got shape {tuple(band.shape)}")
    B, H, N, _ = band.shape
    if heads is not None:
        heads = [heads] if isinstance(heads, int) else list(heads)
        bad = [h for h in heads if not -H <= h < H]
        if bad:
            raise IndexError(f"heads {bad} out of range: the layer has heads 0..{H - 1}")
        band = band[:, heads]
        if global_attn is not None:
            global_attn = global_attn[:, heads]
    size = B * band.shape[1] * N * N * band.element_size()
    if max_bytes is not None and size > max_bytes:
        raise DenseTooLarge(
            f"the dense attention of layer {index} would be {size / 1024**2:,.1f} MiB "
            f"(B={B} x heads={band.shape[1]} x {N} x {N} x {band.element_size()} bytes), over the "
            f"limit of {max_bytes / 1024**2:,.1f} MiB; pick fewer heads, raise max_bytes, or use "
            "attention_received, which never builds it"
        )
    return band_to_dense(band, global_attn, global_attention_mask)
