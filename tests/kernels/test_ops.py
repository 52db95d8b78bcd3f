"""The compiled ops against the readable reference (pyattn.kernels.reference): property
tests over random shapes, every dtype, non-contiguous inputs; opcheck; the
vectorised pure-PyTorch competitor; build facts."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pyattn
from pyattn.kernels import reference
from testing import DEVICES, DTYPES, TOLERANCE, layouts, make_inputs, reference_inputs









@pytest.mark.parametrize("device", DEVICES)
@given(layout=layouts(), dtype=st.sampled_from(DTYPES), non_contiguous=st.booleans(), seed=st.integers(0, 2**16))
def test_band_to_dense_matches_reference(device, layout, dtype, non_contiguous, seed):
    B, H, N, X, w, counts = layout
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed, dtype, device, non_contiguous=non_contiguous)
    dense = pyattn.band_to_dense(local, global_attn, mask)
    assert dense.shape == (B, H, N, N) and dense.dtype == dtype and dense.device == local.device
    expected = reference.band_to_dense(*reference_inputs(local, global_attn, mask))
    torch.testing.assert_close(dense.double().cpu(), expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
@given(
    layout=layouts(),
    dtype=st.sampled_from(DTYPES),
    non_contiguous=st.booleans(),
    fused=st.booleans(),
    weighted_rows=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_attention_received_matches_reference(device, layout, dtype, non_contiguous, fused, weighted_rows, seed):
    B, H, N, X, w, counts = layout
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed, dtype, device, non_contiguous=non_contiguous)
    generator = torch.Generator().manual_seed(seed + 1)
    head_weights = torch.rand(H, generator=generator).to(device) if fused else None
    row_weights = torch.rand(B, N, generator=generator).to(device) if weighted_rows else None
    received = pyattn.attention_received(local, global_attn, mask, head_weights, row_weights)
    assert received.shape == ((B, N) if fused else (B, H, N))
    # Half inputs give float32 sums (no overflow); others keep their dtype.
    assert received.dtype == (torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
    assert received.device == local.device
    expected = reference.attention_received(
        *reference_inputs(local, global_attn, mask),
        None if head_weights is None else head_weights.double().cpu(),
        None if row_weights is None else row_weights.double().cpu(),
    )
    # Sums over up to w + X + 1 entries: scale the tolerance by the magnitude.
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(received.double().cpu(), expected, atol=tol["atol"] * (w + X + 2), rtol=tol["rtol"] * 4)


@given(layout=layouts(), fused=st.booleans(), weighted_rows=st.booleans(), seed=st.integers(0, 2**16))
def test_vectorised_pure_pytorch_matches_reference(layout, fused, weighted_rows, seed):
    B, H, N, X, w, counts = layout
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed, torch.float64)
    head_weights = torch.rand(H, dtype=torch.float64) if fused else None
    row_weights = torch.rand(B, N, dtype=torch.float64) if weighted_rows else None
    got = reference.attention_received_banded(local, global_attn, mask, head_weights, row_weights)
    torch.testing.assert_close(got, reference.attention_received(local, global_attn, mask, head_weights, row_weights))


def test_received_is_column_sum_of_dense_on_longformer_shapes():
    """A 514-wide band (w = 512, X = 1) as Longformer-base returns it, N not a
    multiple of the column block."""
    local, global_attn, mask = make_inputs(1, 2, 700, 1, 512, [1], seed=7)
    dense = pyattn.band_to_dense(local, global_attn, mask)
    torch.testing.assert_close(pyattn.attention_received(local, global_attn, mask), dense.sum(2), atol=1e-4, rtol=1e-5)


def test_unused_global_slots_are_ignored():
    """Junk in the global rows of an item's unused slots (the model writes
    uniform 1/N_pad rows there) must not leak into its output."""
    local, global_attn, mask = make_inputs(2, 2, 12, 3, 4, [3, 1], seed=3)
    junk_global = global_attn.clone()
    junk_global[1, :, :, 1:3] = 1e6
    torch.testing.assert_close(pyattn.band_to_dense(local, junk_global, mask), pyattn.band_to_dense(local, global_attn, mask))
    torch.testing.assert_close(pyattn.attention_received(local, junk_global, mask), pyattn.attention_received(local, global_attn, mask))
    # Attention in an unused slot's local column says the model had more
    # global tokens than the mask marks: refused, not ignored.
    junk_local = local.clone()
    junk_local[1, :, :, 1:3] = 1e6
    with pytest.raises(RuntimeError, match=r"marks 1 global tokens in item 1 but local_attn's global slot 1 carries attention"):
        pyattn.attention_received(junk_local, global_attn, mask)


def test_empty_inputs():
    local = torch.zeros(0, 2, 5, 9)
    assert pyattn.band_to_dense(local).shape == (0, 2, 5, 5)
    assert pyattn.attention_received(local).shape == (0, 2, 5)
    local = torch.zeros(1, 2, 0, 9)
    assert pyattn.band_to_dense(local).shape == (1, 2, 0, 0)
    assert pyattn.attention_received(local, head_weights=torch.ones(2)).shape == (1, 0)


def opcheck_samples():
    samples = []
    for B, H, N, X, w, counts in [(2, 3, 11, 2, 4, [2, 1]), (1, 2, 5, 0, 8, [0]), (2, 1, 9, 1, 2, [1, 0])]:
        local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed=N)
        samples.append((local, global_attn, mask, B, H, N))
    return samples


@pytest.mark.parametrize("sample", range(3))
def test_opcheck(sample):
    local, global_attn, mask, B, H, N = opcheck_samples()[sample]
    torch.library.opcheck(torch.ops.pyattn.band_to_dense.default, (local, global_attn, mask))
    torch.library.opcheck(torch.ops.pyattn.attention_received.default, (local, global_attn, mask, None, None))
    torch.library.opcheck(
        torch.ops.pyattn.attention_received.default, (local, global_attn, mask, torch.rand(H), torch.rand(B, N))
    )
    # Samples that require grad: opcheck then checks the autograd registration.
    grad_local = local.double().requires_grad_()
    grad_global = None if global_attn is None else global_attn.double().requires_grad_()
    torch.library.opcheck(torch.ops.pyattn.band_to_dense.default, (grad_local, grad_global, mask))
    torch.library.opcheck(
        torch.ops.pyattn.attention_received.default,
        (grad_local, grad_global, mask, torch.rand(H, dtype=torch.float64, requires_grad=True),
         torch.rand(B, N, dtype=torch.float64, requires_grad=True)),
    )
    torch.library.opcheck(
        torch.ops.pyattn.attention_received.default, (local.half(), None if global_attn is None else global_attn.half(), mask, None, None),
        {"out_dtype": torch.float64},
    )


def test_ops_compile_with_fake_kernels():
    local, global_attn, mask, *_ = opcheck_samples()[0]

    def analysis(local, global_attn, mask):
        return pyattn.attention_received(local, global_attn, mask).sum(1) * 2

    compiled = torch.compile(analysis, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(local, global_attn, mask), analysis(local, global_attn, mask))


def test_build_reports_cuda_kernels_consistently():
    has_cuda = pyattn.has_cuda_kernels()
    assert isinstance(has_cuda, bool)
    assert torch._C._dispatch_has_kernel_for_dispatch_key("pyattn::attention_received", "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("pyattn::attention_received", "CUDA") == has_cuda
    assert torch._C._dispatch_has_kernel_for_dispatch_key("pyattn::band_to_dense", "CUDA") == has_cuda


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to see two threads")
def test_cpu_kernels_run_in_parallel():
    """Built with OpenMP: at::parallel_for inside the extension uses more than
    one thread (without -fopenmp it silently runs on one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert torch.ops.pyattn.parallel_threads_used(64) == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fused", [False, True])
def test_received_split_into_row_chunks(threads, fused):
    """Long enough that the CPU kernel splits rows into chunks summed
    afterwards, with global tokens in different chunks."""
    local, global_attn, mask = make_inputs(2, 3, 1100, 2, 64, [2, 1], seed=11, dtype=torch.float64)
    mask.zero_()
    mask[0, [5, 900]] = 1
    mask[1, 600] = 1
    local = local.clone()
    local[0, :, [5, 900]] = 0.0  # the model's zero local rows of global tokens
    local[1, :, 600] = 0.0
    head_weights = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64) if fused else None
    row_weights = torch.rand(2, 1100, dtype=torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = pyattn.attention_received(local, global_attn, mask, head_weights, row_weights)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(got, reference.attention_received(local, global_attn, mask, head_weights, row_weights))


# --- Autograd -----------------------------------------------------------------
# gradcheck compares the registered backward with finite differences of the
# op itself (an independent truth: the derivative's definition). The model
# fixes some band entries at zero (global tokens' local rows, unused slots'
# columns) and the ops refuse inputs where they are not; the checked function
# keeps them at zero, so finite differences move only the free entries.


def _model_zeros(local, mask, X):
    keep = torch.ones_like(local)
    if mask is not None:
        for b in range(local.shape[0]):
            positions = torch.nonzero(mask[b]).flatten()
            keep[b, :, positions] = 0
            keep[b, :, :, len(positions) : X] = 0
    return keep


GRAD_CASES = [
    # B, H, N, X, w, counts
    (2, 3, 9, 2, 4, [2, 1]),
    (1, 2, 6, 0, 8, [0]),  # N < w, no global token
    (2, 2, 7, 1, 2, [1, 0]),
]


@pytest.mark.parametrize("case", GRAD_CASES)
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("weighted_rows", [False, True])
def test_attention_received_gradcheck(case, fused, weighted_rows):
    B, H, N, X, w, counts = case
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed=N, dtype=torch.float64)
    keep = _model_zeros(local, mask, X)
    generator = torch.Generator().manual_seed(3)
    head_weights = torch.rand(H, generator=generator, dtype=torch.float64) if fused else None
    row_weights = torch.rand(B, N, generator=generator, dtype=torch.float64) if weighted_rows else None
    inputs = [t.clone().requires_grad_() for t in (local, global_attn, head_weights, row_weights) if t is not None]

    def received(*tensors):
        tensors = list(tensors)
        band = tensors.pop(0) * keep
        glob = tensors.pop(0) if global_attn is not None else None
        heads = tensors.pop(0) if fused else None
        rows = tensors.pop(0) if weighted_rows else None
        return pyattn.attention_received(band, glob, mask, heads, rows)

    assert torch.autograd.gradcheck(received, inputs)
    # And the analytic gradient against the readable reference's autograd.
    out = received(*inputs)
    cotangent = torch.rand(out.shape, generator=generator, dtype=torch.float64)
    mine = torch.autograd.grad(out, inputs, cotangent)
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    rest = list(ref_inputs)
    band = rest.pop(0) * keep
    glob = rest.pop(0) if global_attn is not None else None
    expected_out = reference.attention_received(band, glob, mask, rest.pop(0) if fused else None, rest.pop(0) if weighted_rows else None)
    expected = torch.autograd.grad(expected_out, ref_inputs, cotangent)
    for got, want in zip(mine, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("case", GRAD_CASES)
def test_band_to_dense_gradcheck(case):
    B, H, N, X, w, counts = case
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed=N + 1, dtype=torch.float64)
    keep = _model_zeros(local, mask, X)
    inputs = [t.clone().requires_grad_() for t in (local, global_attn) if t is not None]

    def dense(band, glob=None):
        return pyattn.band_to_dense(band * keep, glob, mask)

    assert torch.autograd.gradcheck(dense, inputs)


def test_gradients_reach_the_inputs():
    """The failure issue 10 reports: x.grad stayed None. Every row of a
    softmax-normalised band sums to 1, so d(sum of everything)/d band is 1 on
    every entry that lands inside [0, N) of a local row, 0 elsewhere."""
    local, global_attn, mask = make_inputs(1, 2, 12, 1, 4, [1], seed=4, dtype=torch.float64)
    local.requires_grad_()
    global_attn.requires_grad_()
    pyattn.attention_received(local, global_attn, mask).sum().backward()
    g = int(torch.nonzero(mask[0])[0])
    rows = torch.arange(12)[:, None]
    cols = rows + torch.arange(5)[None, :] - 2
    inside = ((cols >= 0) & (cols < 12)).double().expand(2, 12, 5).clone()
    inside[:, g] = 0  # the local row of the global token is not used
    expected_band = inside
    torch.testing.assert_close(local.grad[0, :, :, 1:], expected_band)
    expected_slot = torch.ones(2, 12, dtype=torch.float64)
    expected_slot[:, g] = 0
    torch.testing.assert_close(local.grad[0, :, :, 0], expected_slot)
    torch.testing.assert_close(global_attn.grad[0, :, :12], torch.ones(2, 12, 1, dtype=torch.float64))
    assert global_attn.grad[0, :, 12:].abs().sum() == 0  # rows past N are not part of the matrix


def test_half_inputs_return_float32_unless_asked():
    local, global_attn, mask = make_inputs(1, 2, 20, 1, 4, [1], seed=2, dtype=torch.float16)
    assert pyattn.attention_received(local, global_attn, mask).dtype == torch.float32
    assert pyattn.attention_received(local.bfloat16(), global_attn.bfloat16(), mask).dtype == torch.float32
    assert pyattn.attention_received(local, global_attn, mask, out_dtype=torch.float16).dtype == torch.float16
    assert pyattn.attention_received(local.double(), global_attn.double(), mask).dtype == torch.float64
    with pytest.raises(RuntimeError, match="out_dtype must be float16, bfloat16, float32 or float64, got Long"):
        pyattn.attention_received(local, global_attn, mask, out_dtype=torch.long)


def test_half_sums_do_not_overflow():
    """65,536 rows all attending to the CLS token: the column sum is 65,536,
    above float16's largest finite value (65,504)."""
    N, w = 65536, 2
    local = torch.zeros(1, 1, N, 1 + w + 1, dtype=torch.float16)
    local[0, 0, 1:, 0] = 1.0  # every non-global row puts all its attention on CLS
    global_attn = torch.zeros(1, 1, N, 1, dtype=torch.float16)
    global_attn[0, 0, 0, 0] = 1.0  # CLS attends to itself
    mask = torch.zeros(1, N, dtype=torch.long)
    mask[0, 0] = 1
    received = pyattn.attention_received(local, global_attn, mask)
    assert received.dtype == torch.float32 and received[0, 0, 0].item() == 65536.0


def test_no_heads():
    """H = 0 (e.g. every head pruned): per-head output is empty, fused output
    is all zeros, the dense matrix has no heads."""
    local = torch.zeros(2, 0, 7, 1 + 4 + 1)
    global_attn = torch.zeros(2, 0, 8, 1)
    mask = torch.zeros(2, 7, dtype=torch.long)
    mask[:, 0] = 1
    assert pyattn.attention_received(local, global_attn, mask).shape == (2, 0, 7)
    fused = pyattn.attention_received(local, global_attn, mask, torch.ones(0))
    assert fused.shape == (2, 7) and fused.abs().sum() == 0
    assert pyattn.band_to_dense(local, global_attn, mask).shape == (2, 0, 7, 7)
