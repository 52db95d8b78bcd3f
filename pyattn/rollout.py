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

from pyattn.layers import check_head_importance, layers_of
from pyattn.ops import attention_received, global_tables

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
    output: ``(B, N)``, float32, summing to 1 per item.

    ``head_importance`` ``(L, H)`` weights the heads of each layer (normalised
    to sum 1) instead of averaging them.
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
    """The same rollout from dense ``(B, H, N, N)`` matrices (for checking and
    for full-attention models): ``(B, N)``."""
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
