"""Attention rollout (Abnar & Zuidema 2020) from one token, in banded form.

Per layer ``l``: heads averaged (or weighted by head importance, weights
normalised to sum 1) into ``Ā_l``; the residual added, ``Â_l = 0.5 Ā_l +
0.5 I``; rows renormalised to sum 1. Rollout from the CLS token is row 0 of
``Â_L Â_{L-1} ... Â_1``, i.e. the row vector ``v = e_0`` propagated from the
last layer down: ``v <- v Â_l``.

``v Â_l`` is a vector times a banded matrix: column sums of ``Ā_l`` weighted
per query row, which the core op computes from the band
(``attention_received(..., head_weights, row_weights=v / row_sums)``). No
``N x N`` matrix is built, on CPU or GPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from pyattn.kernels.layers import check_head_importance, layers_of
from pyattn.kernels.ops import attention_received, global_tables

__all__ = ["attention_rollout", "dense_rollout"]


def _row_sums(band: torch.Tensor, global_attn: torch.Tensor | None, is_global: torch.Tensor, global_pos: torch.Tensor) -> torch.Tensor:
    """Row sums of each head's dense matrix, (B, H, N), from the band: a
    non-global row sums its band and its used global slots; a global row sums
    its column of global_attn. ``is_global`` (B, N) and ``global_pos`` (B, X)
    (-1 for an unused slot) are the ops' global-token tables. Tensor ops
    only: no host synchronisation."""
    B, H, N, _ = band.shape
    X = 0 if global_attn is None else global_attn.shape[-1]
    sums = band[..., X:].float().sum(-1)  # (B, H, N): the window part of local rows
    if X > 0:
        valid = (global_pos >= 0).float()  # an item's slots past its count are unused: junk
        sums = sums + (band[..., :X].float() * valid[:, None, None, :]).sum(-1)
        global_sums = global_attn[:, :, :N, :].float().sum(2)  # (B, H, X)
        slot_of = (is_global.long().cumsum(1) - 1).clamp(0, X - 1)  # (B, N)
        placed = global_sums.gather(2, slot_of[:, None, :].expand(B, H, N))
        sums = torch.where(is_global[:, None, :], placed, sums)
    return sums


def attention_rollout(
    attentions: Sequence[torch.Tensor] | torch.Tensor | Any,
    global_attentions: Sequence[torch.Tensor] | torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_importance: torch.Tensor | None = None,
    start: int = 0,
    residual: float = 0.5,
) -> torch.Tensor:
    """Rollout from position ``start`` (CLS) over all layers of a Longformer
    output, computed from the bands (no ``N x N`` matrix).

    Parameters
    ----------
    attentions : sequence of torch.Tensor, each (B, H, N, X + w + 1), or a model output
        Per layer, the ``attentions`` output (the band); a model output with
        ``attentions`` and ``global_attentions`` may be passed instead. Band
        entries outside the sequence must be zero, as the model makes them.
    global_attentions : sequence of torch.Tensor, each (B, H, N, X), optional
    global_attention_mask : torch.Tensor, shape (B, N), optional
    head_importance : torch.Tensor, shape (L, H), optional
        Weights the heads of each layer (normalised to sum 1) instead of
        averaging them.
    start : int
        The position the rollout starts from (0 = CLS).
    residual : float
        Weight of the identity: ``Â_l = (1 - residual) Ā_l + residual I``.

    Returns
    -------
    torch.Tensor, shape (B, N), float32
        Sums to 1 per item.

    Raises
    ------
    IndexError
        If ``start`` is outside the sequence.

    Examples
    --------
    >>> import torch
    >>> band = torch.tensor([[[[0, .5, .5], [1/3, 1/3, 1/3], [1/3, 1/3, 1/3], [.5, .5, 0]]]])  # N=4, w=2
    >>> attention_rollout([band])  # one layer: 0.5 * row 0 of A + 0.5 * e_0
    tensor([[0.7500, 0.2500, 0.0000, 0.0000]])
    >>> attention_rollout([band, band])  # [.75, .25, 0, 0] @ Â
    tensor([[0.6042, 0.3542, 0.0417, 0.0000]])
    """
    local, glob = layers_of(attentions, global_attentions)
    B, H, N, _ = local[0].shape
    weights = check_head_importance(head_importance, len(local), H)
    device = local[0].device
    X = 0 if glob[0] is None else glob[0].shape[-1]
    is_global, global_pos = global_tables(None if global_attention_mask is None else global_attention_mask.to(device), B, N, X, device)
    if not 0 <= start < N:
        raise IndexError(f"start position {start} is outside the sequence of {N} tokens")
    v = torch.zeros(B, N, device=device)
    v[:, start] = 1.0
    for index in reversed(range(len(local))):
        band, global_attn = local[index], glob[index]
        head_weights = torch.full((H,), 1.0 / H, device=device) if weights is None else weights[index].to(device).float()
        if weights is not None:
            head_weights = head_weights / head_weights.sum()
        mixed_row_sums = (_row_sums(band, global_attn, is_global, global_pos) * head_weights[None, :, None]).sum(1)  # (B, N)
        # Â = (1 - residual) Ā + residual I, each row divided by its sum.
        row_totals = (1 - residual) * mixed_row_sums + residual
        scaled = v / row_totals
        spread = attention_received(band.float(), None if global_attn is None else global_attn.float(), global_attention_mask, head_weights, scaled)
        v = (1 - residual) * spread + residual * scaled
    return v


def dense_rollout(dense_layers: Sequence[torch.Tensor], head_weights: Sequence[torch.Tensor] | None = None, start: int = 0, residual: float = 0.5) -> torch.Tensor:
    """The same rollout as :func:`attention_rollout` from dense matrices (for
    checking, and for full-attention models), computed in float64.

    Parameters
    ----------
    dense_layers : sequence of torch.Tensor, each (B, H, N, N)
    head_weights : sequence of torch.Tensor, each (H,), optional
        Per layer, weights of the heads (normalised to sum 1); default the mean.
    start : int
    residual : float
        As for :func:`attention_rollout`.

    Returns
    -------
    torch.Tensor, shape (B, N), float32
        Row ``start`` of the rolled-out attention: a distribution over the
        ``N`` tokens (each row sums to 1 when every layer's rows do).

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])
    >>> dense_rollout([A])  # 0.5 * [0.5, 0.5] + 0.5 * [1, 0]
    tensor([[0.7500, 0.2500]])
    >>> dense_rollout([A, A])  # [0.75, 0.25] @ [[0.75, 0.25], [0, 1]]
    tensor([[0.5625, 0.4375]])
    """
    B, H, N, _ = dense_layers[0].shape
    eye = torch.eye(N, dtype=torch.float64, device=dense_layers[0].device)
    v = torch.zeros(B, N, dtype=torch.float64, device=dense_layers[0].device)
    v[:, start] = 1.0
    for index in reversed(range(len(dense_layers))):
        w = torch.full((H,), 1.0 / H, dtype=torch.float64) if head_weights is None else head_weights[index].double() / head_weights[index].double().sum()
        mixed = torch.einsum("bhij,h->bij", dense_layers[index].double(), w.to(v.device))
        a_hat = (1 - residual) * mixed + residual * eye
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)
        v = torch.einsum("bi,bij->bj", v, a_hat)
    return v.float()
