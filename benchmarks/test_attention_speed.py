"""Speed of the compiled ops against baselines measured in the same run.

Run: make bench  (or: python -m pytest benchmarks --benchmark-only)
Set PYATTN_BENCH_DEVICE=cuda to time on a GPU, PYATTN_BENCH_QUICK=1 for a
short run. Tables and ratios: benchmarks/results/attention.md, written by
benchmarks/report.py from one run's pytest-benchmark JSON.

Groups (each a column of the table):
- received-N: attention received, 12 layers x 12 heads, heads weighted by
  importance. Two floors over the same band and global tensors, measured in
  the same run: ``floor_sum`` (one .sum(): reads every byte once, as the
  kernel must) and ``floor_copy`` (a streaming copy into preallocated
  buffers: reads and writes every byte, the usual memory-bandwidth yardstick).
- dense-N: band_to_dense of one layer (12 heads); the floor is zero-filling
  the (1, 12, N, N) output.
- scaling-N: attention received of one layer vs the dense route (dense, then
  column sums), N up to 16384.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import pyattn  # noqa: E402
from pyattn.kernels import reference  # noqa: E402
from baselines import original_attention_received  # noqa: E402
from inputs import longformer_like  # noqa: E402

DEVICE = os.environ.get("PYATTN_BENCH_DEVICE", "cpu")
QUICK = bool(os.environ.get("PYATTN_BENCH_QUICK"))
LAYERS, HEADS, WINDOW = 12, 12, 512
SIZES = [1024] if QUICK else [1024, 2048, 4096]
SCALING = [1024, 4096] if QUICK else [1024, 2048, 4096, 8192, 16384]
# The original method materialises (L, 1, H, N, N) twice over (19 GB at
# N = 4096): run it where it fits and finishes in minutes.
ORIGINAL_SIZES = [1024] if QUICK else [1024, 2048]


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


_cache: dict = {}


def model_like(n: int, layers: int = LAYERS):
    key = (n, layers)
    if key not in _cache:
        _cache.clear()  # keep one size in memory at a time
        attentions, global_attentions, mask = longformer_like(layers, HEADS, n, WINDOW)
        move = lambda t: t.to(DEVICE)  # noqa: E731
        _cache[key] = (
            tuple(map(move, attentions)),
            tuple(map(move, global_attentions)),
            move(mask),
            torch.rand(layers, HEADS, generator=torch.Generator().manual_seed(1)).to(DEVICE),
        )
    return _cache[key]


def run(benchmark, fn, rounds=20):
    def timed():
        out = fn()
        sync()
        return out

    timed()  # warm-up (first call of an op, allocator)
    return benchmark.pedantic(timed, rounds=rounds, iterations=1)


def per_layer(op, attentions, global_attentions, mask, importance):
    """A one-layer pure-PyTorch route applied to every layer, stacked (L, B, N)."""
    return torch.stack([op(a, g, mask, importance[layer]) for layer, (a, g) in enumerate(zip(attentions, global_attentions))])


# --------------------------------------------------------------- received-N
@pytest.mark.parametrize("n", SIZES)
def test_received_floor_sum(benchmark, n):
    attentions, global_attentions, mask, importance = model_like(n)
    benchmark.group = f"received-{n}"
    benchmark.extra_info["bytes"] = sum(t.numel() * t.element_size() for t in list(attentions) + list(global_attentions))
    run(benchmark, lambda: [a.sum() + g.sum() for a, g in zip(attentions, global_attentions)])


@pytest.mark.parametrize("n", SIZES)
def test_received_floor_copy(benchmark, n):
    attentions, global_attentions, mask, importance = model_like(n)
    benchmark.group = f"received-{n}"
    sources = list(attentions) + list(global_attentions)
    targets = [torch.empty_like(t) for t in sources]
    benchmark.extra_info["bytes"] = sum(t.numel() * t.element_size() for t in sources)
    run(benchmark, lambda: [d.copy_(s) for d, s in zip(targets, sources)])


@pytest.mark.parametrize("n", SIZES)
def test_received_extension(benchmark, n):
    attentions, global_attentions, mask, importance = model_like(n)
    benchmark.group = f"received-{n}"
    out = run(benchmark, lambda: pyattn.layer_attention_received(attentions, global_attentions, mask, importance).per_layer)
    assert out.shape == (LAYERS, 1, n)


@pytest.mark.parametrize("n", SIZES)
def test_received_vectorised_pytorch(benchmark, n):
    attentions, global_attentions, mask, importance = model_like(n)
    benchmark.group = f"received-{n}"

    def vectorised():
        return per_layer(reference.attention_received_banded, attentions, global_attentions, mask, importance)

    out = run(benchmark, vectorised, rounds=3)
    expected = pyattn.layer_attention_received(attentions, global_attentions, mask, importance).per_layer
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("n", [1024])
def test_received_reference(benchmark, n):
    """The readable reference builds every dense matrix in float64: N = 1024 only."""
    attentions, global_attentions, mask, importance = model_like(n)
    benchmark.group = f"received-{n}"

    def readable():
        return per_layer(reference.attention_received, attentions, global_attentions, mask, importance)

    run(benchmark, readable, rounds=1)


@pytest.mark.skipif(DEVICE != "cpu", reason="the original method ran on the CPU (numpy)")
@pytest.mark.parametrize("n", ORIGINAL_SIZES)
def test_received_original_notebook(benchmark, n):
    attentions, global_attentions, mask, importance = model_like(n)
    benchmark.group = f"received-{n}"
    final, all_layers = run(
        benchmark,
        lambda: original_attention_received(attentions, global_attentions, importance.numpy()),
        rounds=1,
    )
    ours = pyattn.layer_attention_received(attentions, global_attentions, mask, importance)
    np.testing.assert_allclose(final, ours.final_layer[0].numpy(), rtol=1e-4, atol=1e-2)


# ------------------------------------------------------------------ dense-N
@pytest.mark.parametrize("n", SIZES)
def test_dense_floor_zero_fill(benchmark, n):
    attentions, *_ = model_like(n)
    benchmark.group = f"dense-{n}"
    run(benchmark, lambda: torch.zeros(1, HEADS, n, n, device=DEVICE))


@pytest.mark.parametrize("n", SIZES)
def test_dense_extension(benchmark, n):
    attentions, global_attentions, mask, _ = model_like(n)
    benchmark.group = f"dense-{n}"
    run(benchmark, lambda: pyattn.band_to_dense(attentions[0], global_attentions[0], mask))


@pytest.mark.parametrize("n", [1024])
def test_dense_reference(benchmark, n):
    attentions, global_attentions, mask, _ = model_like(n)
    benchmark.group = f"dense-{n}"
    run(benchmark, lambda: reference.band_to_dense(attentions[0], global_attentions[0], mask), rounds=1)


# ---------------------------------------------------------------- scaling-N
@pytest.mark.parametrize("n", SCALING)
def test_scaling_received_extension(benchmark, n):
    attentions, global_attentions, mask, importance = model_like(n, layers=1)
    benchmark.group = f"scaling-{n}"
    run(benchmark, lambda: pyattn.attention_received(attentions[0], global_attentions[0], mask, importance[0]))


@pytest.mark.parametrize("n", SCALING)
def test_scaling_received_floor_sum(benchmark, n):
    attentions, global_attentions, mask, importance = model_like(n, layers=1)
    benchmark.group = f"scaling-{n}"
    run(benchmark, lambda: attentions[0].sum() + global_attentions[0].sum())


@pytest.mark.parametrize("n", [s for s in SCALING if s <= 8192])
def test_scaling_dense_route(benchmark, n):
    """Dense, then column sums: 12 x 8192^2 float32 is 3.2 GB; 16384 would be 12.9 GB."""
    attentions, global_attentions, mask, importance = model_like(n, layers=1)
    benchmark.group = f"scaling-{n}"

    def dense_route():
        dense = pyattn.band_to_dense(attentions[0], global_attentions[0], mask)
        return torch.einsum("bhij,h->bj", dense, importance[0])

    run(benchmark, dense_route, rounds=2)
