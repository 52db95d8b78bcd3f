"""The CUDA kernels' per-thread code, run on the CPU by a host emulator
(tests/harness/emulate_cuda.cpp, built here with g++): every block and thread
of the real launch shapes, compared with the reference. Catches indexing and
bounds bugs on machines without a GPU."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyattn.kernels import reference
from testing import DTYPES, TOLERANCE, cuda_emulator, layouts, make_inputs



@pytest.fixture(scope="module")
def emulator():
    return cuda_emulator()


@settings(max_examples=60)
@given(layout=layouts(), dtype=st.sampled_from(DTYPES), non_contiguous=st.booleans(), seed=st.integers(0, 2**16))
def test_emulated_cuda_dense_matches_reference(emulator, layout, dtype, non_contiguous, seed):
    B, H, N, X, w, counts = layout
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed, dtype, non_contiguous=non_contiguous)
    dense = emulator.band_to_dense(local, global_attn, mask)
    expected = reference.band_to_dense(local.double(), None if global_attn is None else global_attn.double(), mask)
    torch.testing.assert_close(dense.double(), expected, **TOLERANCE[dtype])


@settings(max_examples=60)
@given(layout=layouts(), fused=st.booleans(), weighted_rows=st.booleans(), seed=st.integers(0, 2**16))
def test_emulated_cuda_received_matches_reference(emulator, layout, fused, weighted_rows, seed):
    B, H, N, X, w, counts = layout
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed, torch.float64, non_contiguous=seed % 2 == 0)
    head_weights = torch.rand(H, dtype=torch.float64) if fused else None
    row_weights = torch.rand(B, N, dtype=torch.float64) if weighted_rows else None
    got = emulator.attention_received(local, global_attn, mask, head_weights, row_weights)
    torch.testing.assert_close(got, reference.attention_received(local, global_attn, mask, head_weights, row_weights))


def test_emulated_cuda_received_spans_several_column_blocks(emulator):
    """N over two of the kernel's 256-column blocks, a 514-wide band, X = 2:
    rows whose band crosses block edges and global rows far from their column."""
    local, global_attn, mask = make_inputs(1, 2, 600, 2, 512, [2], seed=5)
    head_weights = torch.tensor([0.25, 2.0])
    for weights in (None, head_weights):
        torch.testing.assert_close(
            emulator.attention_received(local, global_attn, mask, weights, None),
            reference.attention_received_banded(local, global_attn, mask, weights),
            atol=1e-4, rtol=1e-5,
        )


def test_emulated_cuda_no_heads(emulator):
    """H = 0: the fused output is all zeros (B, N), the per-head one empty."""
    local = torch.zeros(2, 0, 7, 1 + 4 + 1)
    global_attn = torch.zeros(2, 0, 8, 1)
    mask = torch.zeros(2, 7, dtype=torch.long)
    mask[:, 0] = 1
    fused = emulator.attention_received(local, global_attn, mask, torch.ones(0), None)
    assert fused.shape == (2, 7) and fused.abs().sum() == 0
    assert emulator.attention_received(local, global_attn, mask, None, None).shape == (2, 0, 7)


def test_emulated_cuda_batch_past_the_grid_z_limit(emulator):
    """B = 65,537 items (over CUDA's 65,535 limit on grid.y and grid.z): the
    launch folds items into grid.x."""
    B, N = 65537, 3
    local, global_attn, mask = make_inputs(1, 1, N, 1, 2, [1], seed=9)
    local, global_attn, mask = local.expand(B, -1, -1, -1), global_attn.expand(B, -1, -1, -1), mask.expand(B, -1)
    scale = torch.arange(1, B + 1, dtype=torch.float32)[:, None]  # distinct per item
    got = emulator.attention_received(local, global_attn, mask, torch.ones(1), scale.expand(B, N).contiguous())
    one = reference.attention_received(local[:1].double(), global_attn[:1].double(), mask[:1], torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(got.double(), scale.double() * one, rtol=1e-6, atol=1e-3)
