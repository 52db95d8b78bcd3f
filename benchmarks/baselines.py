"""The original notebooks' route to attention received, written from its
description (../shared/reference/notebook_attention_vs_attribution.txt): per
head and per row, `torch.nonzero` over the band row, each value placed at
column `index - (w/2 + 1) + row`, the global column and the global row copied
in, a Python loop over rows into a dense tensor per head; all layers stacked;
then the dense tensors scaled by head importance and summed over rows.
Assumes X = 1, one window for every layer and a document without padding,
as the original did. Kept here, outside the package, as the benchmark's
baseline."""

from __future__ import annotations

import numpy as np
import torch


def create_head_matrix(band: torch.Tensor, global_row: torch.Tensor, offset: int) -> torch.Tensor:
    n = band.shape[0]
    dense = torch.zeros((n, n))
    for i in range(n):
        nonzero = torch.nonzero(band[i]).squeeze(-1)
        window = nonzero[nonzero > 0]  # index 0 is the global slot
        dense[i][window - offset + i] = band[i][window]
        dense[i][0] = band[i][0]
        dense[0] = global_row.squeeze()[:n]
    return dense


def original_attention_received(attentions, global_attentions, head_importance):
    """Returns (final layer, all layers) attention received, each (N,), B = 1."""
    stacked = torch.stack(attentions)  # (L, 1, H, N, X + w + 1)
    stacked_global = torch.stack(global_attentions)
    offset = (stacked.shape[-1] - 2) // 2 + 1  # w / 2 + 1: 257 for w = 512
    L, B, H, N, _ = stacked.shape
    converted = torch.stack(
        [
            torch.stack(
                [
                    torch.stack([create_head_matrix(stacked[l, b, h], stacked_global[l, b, h], offset) for h in range(H)])
                    for b in range(B)
                ]
            )
            for l in range(L)
        ]
    ).numpy()  # (L, B, H, N, N)
    scaled = np.zeros_like(converted)
    for l in range(L):
        for b in range(B):
            scaled[l, b] = converted[l, b] * np.expand_dims(head_importance[l], axis=(1, 2))
    received = scaled.sum(axis=3)  # (L, B, H, N)
    return received[-1].squeeze().sum(axis=0), received.squeeze().sum(axis=1).sum(axis=0)
