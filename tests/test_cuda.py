"""CUDA kernels against the CPU kernels and the reference. Run where a GPU is
(and the build has CUDA kernels); skipped otherwise. The same per-thread code
is exercised without a GPU by test_cuda_emulation.py."""

from __future__ import annotations

import pytest
import torch

import pyattn
from pyattn import reference
from test_ops import DTYPES, TOLERANCE, make_inputs

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and pyattn.has_cuda_kernels()),
    reason="needs a CUDA device and a build with CUDA kernels",
)

CASES = [
    # B, H, N, X, w, counts
    (1, 12, 1024, 1, 512, [1]),  # Longformer-base shape
    (2, 4, 777, 3, 256, [3, 1]),
    (3, 2, 5, 2, 16, [0, 2, 1]),  # N < w
    (1, 1, 1, 0, 2, [0]),  # N = 1
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("non_contiguous", [False, True])
def test_cuda_matches_cpu_and_reference(case, dtype, non_contiguous):
    B, H, N, X, w, counts = case
    local, global_attn, mask = make_inputs(B, H, N, X, w, counts, seed=N, dtype=dtype, non_contiguous=non_contiguous)
    cuda = [None if t is None else t.cuda() for t in (local, global_attn, mask)]
    head_weights = torch.rand(H)
    row_weights = torch.rand(B, N)
    tol = TOLERANCE[dtype]
    for weights in [(None, None), (head_weights, None), (None, row_weights), (head_weights, row_weights)]:
        on_gpu = pyattn.attention_received(*cuda, *[None if t is None else t.cuda() for t in weights])
        on_cpu = pyattn.attention_received(local, global_attn, mask, *weights)
        assert on_gpu.device.type == "cuda" and on_gpu.dtype == dtype
        torch.testing.assert_close(on_gpu.cpu().double(), on_cpu.double(), atol=tol["atol"] * (w + 4), rtol=tol["rtol"] * 4)
    if N <= 1024 and H * N * N * B <= 2**24:
        dense = pyattn.band_to_dense(*cuda)
        torch.testing.assert_close(dense.cpu(), pyattn.band_to_dense(local, global_attn, mask))
        if N <= 64:
            expected = reference.band_to_dense(local.double(), None if global_attn is None else global_attn.double(), mask)
            torch.testing.assert_close(dense.cpu().double(), expected, **tol)


def test_cuda_opcheck():
    local, global_attn, mask = (t.cuda() for t in make_inputs(2, 3, 11, 2, 4, [2, 1], seed=0))
    torch.library.opcheck(torch.ops.pyattn.band_to_dense.default, (local, global_attn, mask))
    torch.library.opcheck(
        torch.ops.pyattn.attention_received.default,
        (local, global_attn, mask, torch.rand(3, device="cuda"), torch.rand(2, 11, device="cuda")),
    )


def test_cuda_on_a_second_device_index_uses_that_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    local, global_attn, mask = (t.to("cuda:1") for t in make_inputs(1, 2, 50, 1, 8, [1], seed=1))
    assert pyattn.attention_received(local, global_attn, mask).device == torch.device("cuda:1")
