"""attention_received_qk (two passes over tiles, no N x N) against the dense
route measured in the same run: ``torch.softmax(q @ k^T * scale + mask)`` in
float32 torch, materialised, then its column sums.

One layer: B = 1, H = 12, d = 64, N = 1,024-8,192; full attention and a
symmetric window of 128 (64 each side, ModernBERT's local layers). Ratios
come from one run's JSON (benchmarks/report.py reads the groups).

Full numbers (about 10 minutes on 2 cores; the dense route holds
12 x N^2 float32 = 3.2 GB at N = 8,192, twice over while softmax runs):
    OMP_NUM_THREADS=2 python -m pytest benchmarks/test_qk_speed.py --benchmark-only \
        --benchmark-json=build/bench-qk.json -q
Check at N = 256 only:  PYATTN_BENCH_QK_SIZES=256 (same command).
"""

from __future__ import annotations

import os

import pytest
import torch

from pyattn.kernels.ops import attention_received_qk

HEADS, HEAD_DIM = 12, 64
SIZES = [int(n) for n in os.environ.get("PYATTN_BENCH_QK_SIZES", "1024,2048,4096,8192").split(",")]
WINDOWS = {"full": (-1, -1), "window128": (64, 64)}


def inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, HEADS, n, HEAD_DIM, generator=g)
    k = torch.randn(1, HEADS, n, HEAD_DIM, generator=g)
    return q, k


def dense_received(q, k, scale, window):
    """The dense route: the (B, H, N, N) probabilities, then column sums."""
    n = q.shape[2]
    scores = q @ k.transpose(-1, -2) * scale
    if window != (-1, -1):
        i = torch.arange(n)
        outside = (i[None, :] - i[:, None]).abs() > window[0]
        scores = scores.masked_fill(outside, float("-inf"))
    return torch.softmax(scores, -1).sum(2)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("route", ["op", "dense"])
def test_qk_speed(benchmark, n, window, route):
    q, k = inputs(n)
    scale = HEAD_DIM**-0.5
    win = WINDOWS[window]
    benchmark.group = f"qk-{window}-{n}"
    op = lambda: attention_received_qk(q, k, scale, window=win)  # noqa: E731
    dense = lambda: dense_received(q, k, scale, win)  # noqa: E731
    if route == "op":
        got = benchmark.pedantic(op, rounds=3, warmup_rounds=1)
    else:
        got = benchmark.pedantic(dense, rounds=3, warmup_rounds=1)
    other = dense() if route == "op" else op()
    torch.testing.assert_close(got, other, atol=1e-4, rtol=1e-4)  # same answer before any ratio means anything
