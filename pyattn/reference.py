"""Readable pure-PyTorch versions of the compiled ops.

``band_to_dense`` and ``attention_received`` here follow
``../shared/LONGFORMER_LAYOUT.md`` line by line and compute in float64; they
build the ``N x N`` matrix and are meant for tests and small inputs.

``attention_received_banded`` is the fastest pure-PyTorch way we know to get
the same column sums without the ``N x N`` matrix (a sheared strided view of
the band): a fallback where the extension is unavailable and the honest
competitor in ``benchmarks/``.

Shapes are those of :mod:`pyattn.ops`.
"""

from __future__ import annotations

import torch

__all__ = ["band_to_dense", "attention_received", "attention_received_banded", "global_positions"]


def _layout(local_attn: torch.Tensor, global_attn: torch.Tensor | None) -> tuple[int, int]:
    """(X, w): the number of global slots and the window."""
    X = 0 if global_attn is None else global_attn.shape[-1]
    w = local_attn.shape[-1] - X - 1
    if w < 2 or w % 2:
        raise ValueError(f"local_attn's last dimension {local_attn.shape[-1]} is not X + w + 1 with X = {X} and an even w >= 2")
    return X, w


def global_positions(global_attention_mask: torch.Tensor | None, batch: int, n: int) -> list[torch.Tensor]:
    """Per item, the global positions in ascending order: slot m is entry m."""
    if global_attention_mask is None:
        return [torch.zeros(0, dtype=torch.long) for _ in range(batch)]
    return [torch.nonzero(global_attention_mask[b] != 0).flatten().cpu() for b in range(batch)]


def band_to_dense(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense ``(B, H, N, N)`` attention, A[b, h, i, j], built entry by entry
    from the layout rules (computed in float64, returned in the input dtype)."""
    B, H, N, _ = local_attn.shape
    X, w = _layout(local_attn, global_attn)
    half = w // 2
    dense = torch.zeros(B, H, N, N, dtype=torch.float64, device=local_attn.device)
    rows = torch.arange(N, device=local_attn.device)
    for b, positions in enumerate(global_positions(global_attention_mask, B, N)):
        if len(positions) > X:
            raise ValueError(f"item {b} has {len(positions)} global tokens but X = {X}")
        band = local_attn[b, :, :, X:].double()  # (H, N, w + 1)
        # Window: A[i, i + k - half] = band[i, k], for columns inside [0, N).
        for k in range(w + 1):
            cols = rows + k - half
            inside = (cols >= 0) & (cols < N)
            dense[b, :, rows[inside], cols[inside]] += band[:, inside, k]
        # Global columns: A[i, g_m] += local[i, m].
        for m, g in enumerate(positions.tolist()):
            dense[b, :, :, g] += local_attn[b, :, :, m].double()
        # Global rows replace whatever the local rows held (zeros).
        for m, g in enumerate(positions.tolist()):
            dense[b, :, g, :] = global_attn[b, :, :N, m].double()
    return dense.to(local_attn.dtype)


def attention_received(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Column sums of :func:`band_to_dense`: ``(B, H, N)``, or ``(B, N)`` with
    ``head_weights``; ``row_weights`` ``(B, N)`` weights each query row."""
    B, H, N, _ = local_attn.shape
    dense = band_to_dense(local_attn.double(), None if global_attn is None else global_attn.double(), global_attention_mask)
    weights = torch.ones(B, N, dtype=torch.float64, device=dense.device) if row_weights is None else row_weights.double()
    received = torch.einsum("bhij,bi->bhj", dense, weights)
    if head_weights is not None:
        received = torch.einsum("bhj,h->bj", received, head_weights.double())
    return received.to(local_attn.dtype)


def attention_received_banded(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Column sums from the band in a few vectorised passes, no ``N x N``.

    The band element of column ``j`` on row ``i`` sits at ``k = j - i + w/2``.
    Copy the band (global rows zeroed) into a buffer ``P`` with ``w/2`` zero
    rows above and below; then entry ``(j, t)`` of the strided view with
    offset ``w`` and strides ``(w + 1, w)`` is ``P[j + t, w - t]``, the element
    of row ``j - w/2 + t`` that lands in column ``j``, and a sum over ``t``
    gives the column sums. Computed in float32 (float64 for float64 input).
    """
    B, H, N, _ = local_attn.shape
    X, w = _layout(local_attn, global_attn)
    half = w // 2
    acc = torch.float64 if local_attn.dtype == torch.float64 else torch.float32
    is_global = torch.zeros(B, N, dtype=torch.bool, device=local_attn.device)
    if global_attention_mask is not None:
        is_global = global_attention_mask != 0
    keep = (~is_global).to(acc)[:, None, :, None]  # non-global rows
    padded = local_attn.new_zeros((B, H, N + w, w + 1), dtype=acc)
    padded[:, :, half : half + N] = local_attn[..., X:] * keep
    s = w + 1
    sheared = padded.as_strided((B, H, N, w + 1), (padded.stride(0), padded.stride(1), s, s - 1), padded.storage_offset() + w)
    received = sheared.sum(-1)
    if X > 0:
        slots = is_global.long().cumsum(1) - 1
        g_local = local_attn[..., :X].to(acc) * keep  # (B, H, N, X)
        column_sums = g_local.sum(2)  # (B, H, X)
        global_rows = global_attn[:, :, :N, :].to(acc)  # (B, H, N, X)
        for b in range(B):
            positions = torch.nonzero(is_global[b]).flatten()
            m = slots[b, positions]
            received[b, :, positions] += column_sums[b][:, m]
            received[b] += global_rows[b][:, :, m].sum(-1)
    if head_weights is not None:
        received = torch.einsum("bhj,h->bj", received, head_weights.to(acc))
    return received.to(local_attn.dtype)
