"""Longformer-shaped inputs for the benchmarks: per layer a band
(B, H, N, X + w + 1) and global attention (B, H, N, X) laid out as the model
returns them, with zeros where the model has them (band entries outside
[0, N), the local row of the global token, the window entry of the global
column), so that the original notebooks' method runs on them unchanged."""

from __future__ import annotations

import torch


def longformer_like(layers: int, heads: int, n: int, window: int = 512, seed: int = 0, dtype=torch.float32):
    """Returns (attentions, global_attentions, global_attention_mask): tuples of
    `layers` tensors, one global token (position 0, the CLS default)."""
    generator = torch.Generator().manual_seed(seed)
    half = window // 2
    rows = torch.arange(n)[:, None]
    cols = rows + torch.arange(window + 1)[None, :] - half
    outside = (cols < 0) | (cols >= n) | (cols == 0)  # column 0 is global: its window entry is 0
    attentions, global_attentions = [], []
    for _ in range(layers):
        band = torch.rand(1, heads, n, 1 + window + 1, generator=generator, dtype=dtype)
        band[..., 1:].masked_fill_(outside, 0.0)
        band[:, :, 0, :] = 0.0  # the global token's local row
        attentions.append(band)
        global_attentions.append(torch.rand(1, heads, n, 1, generator=generator, dtype=dtype))
    mask = torch.zeros(1, n, dtype=torch.long)
    mask[0, 0] = 1
    return tuple(attentions), tuple(global_attentions), mask
