"""CUDA kernels against the CPU kernels and the reference. Run where a GPU is
(and the build has CUDA kernels); skipped otherwise. The same per-thread code
is exercised without a GPU by test_cuda_emulation.py."""

from __future__ import annotations

import pytest
import torch

import pyattn
from pyattn.kernels import reference
from testing import DTYPES, ROOT, TOLERANCE, make_inputs

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
        assert on_gpu.device.type == "cuda" and on_gpu.dtype == on_cpu.dtype
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



# --- Extended GPU checks (issue 12), run by `make gpu-check` -----------------

from pyattn.kernels.ops import attention_received_layers  # noqa: E402


def _cpu_truth(local, global_attn, mask, head_weights=None, row_weights=None):
    """The CPU kernel in float64 (itself checked against the readable
    reference in test_ops.py)."""
    return pyattn.attention_received(
        local.double().cpu(),
        None if global_attn is None else global_attn.double().cpu(),
        None if mask is None else mask.cpu(),
        None if head_weights is None else head_weights.double().cpu(),
        None if row_weights is None else row_weights.double().cpu(),
    )


def test_cuda_on_the_hugging_face_layout():
    """A real model's output on the GPU: cropped (N not a multiple of the
    window) and strided views, windows differing per layer, X = 3 with
    different counts per item."""
    from testing import tiny_longformer

    model = tiny_longformer().cuda()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 64, (2, 37), generator=generator)
    mask = torch.zeros(2, 37, dtype=torch.long)
    mask[0, [0, 3, 10]] = 1
    mask[1, 5] = 1
    with torch.no_grad():
        out = model(input_ids=ids.cuda(), global_attention_mask=mask.cuda(), output_attentions=True)
    got = attention_received_layers(out.attentions, out.global_attentions, mask.cuda())
    for layer, (band, glob) in enumerate(zip(out.attentions, out.global_attentions)):
        expected = reference.attention_received(band.double().cpu(), glob.double().cpu(), mask)
        torch.testing.assert_close(got[layer].cpu().double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("N", [4097, 16384, 65536])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_long_sequences(N, dtype):
    local, global_attn, mask = make_inputs(1, 2, N, 2, 512, [2], seed=N, dtype=dtype)
    cuda = [t.cuda() for t in (local, global_attn, mask)]
    got = pyattn.attention_received(*cuda)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu().double(), _cpu_truth(local, global_attn, mask), atol=2e-3, rtol=2e-3 if dtype == torch.bfloat16 else 1e-5)


def test_cuda_many_global_tokens_different_counts():
    local, global_attn, mask = make_inputs(3, 4, 2048, 64, 64, [64, 17, 0], seed=3)
    heads, rows = torch.rand(4), torch.rand(3, 2048)
    cuda = [t.cuda() for t in (local, global_attn, mask)]
    for weights in [(None, None), (heads, rows)]:
        got = pyattn.attention_received(*cuda, *[None if t is None else t.cuda() for t in weights])
        torch.testing.assert_close(got.cpu().double(), _cpu_truth(local, global_attn, mask, *weights), atol=1e-4, rtol=1e-5)


def test_cuda_bitwise_repeatable_and_deterministic_mode():
    local, global_attn, mask = (t.cuda() for t in make_inputs(2, 12, 4096, 3, 512, [3, 1], seed=4))
    heads = torch.rand(12, device="cuda")
    first = pyattn.attention_received(local, global_attn, mask, heads)
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(5):
            assert torch.equal(pyattn.attention_received(local, global_attn, mask, heads), first)
    finally:
        torch.use_deterministic_algorithms(False)


def test_cuda_non_default_stream():
    local, global_attn, mask = (t.cuda() for t in make_inputs(2, 4, 3000, 2, 256, [2, 1], seed=5))
    expected = pyattn.attention_received(local, global_attn, mask)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = pyattn.attention_received(local, global_attn, mask)
    stream.synchronize()
    assert torch.equal(got, expected)


def test_cuda_no_host_synchronisation():
    local, global_attn, mask = (t.cuda() for t in make_inputs(2, 4, 1000, 2, 64, [2, 1], seed=6))
    heads = torch.rand(3, 4, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pyattn.attention_received(local, global_attn, mask)
        pyattn.attention_received(local, global_attn, mask, heads[0], torch.rand(2, 1000, device="cuda"))
        attention_received_layers([local] * 3, [global_attn] * 3, mask, heads)
        pyattn.band_to_dense(local[:, :, :50], global_attn, mask[:, :50])
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cuda_graph_capture():
    local, global_attn, mask = (t.cuda() for t in make_inputs(1, 4, 2000, 1, 128, [1], seed=7))
    heads = torch.rand(4, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        pyattn.attention_received(local, global_attn, mask, heads)  # warm-up
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = pyattn.attention_received(local, global_attn, mask, heads)
    local.mul_(2.0)  # replay must see the new values
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, pyattn.attention_received(local, global_attn, mask, heads))


def test_cuda_mask_disagreement_is_a_device_side_error():
    """The mask check on the GPU is an asynchronous device-side assert: run in
    a child process, since it leaves the CUDA context unusable."""
    import subprocess
    import sys

    code = (
        "import torch, pyattn, sys; sys.path.insert(0, 'tests');"
        "from testing import make_inputs;"
        "local, glob, mask = (t.cuda() for t in make_inputs(2, 2, 50, 2, 8, [2, 1], seed=1));"
        "mask = mask.clone(); mask[0] = 0;"
        "r = pyattn.attention_received(local, glob, mask); torch.cuda.synchronize()"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "global_attention_mask marks fewer global tokens" in result.stderr or "device-side assert" in result.stderr


# --- attention_received_qk (issue 18) ----------------------------------------

from pyattn.kernels.ops import attention_received_qk  # noqa: E402


def _qk_inputs(B, H, Hkv, N, d, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, d, generator=g).to(dtype)
    k = torch.randn(B, Hkv, N, d, generator=g).to(dtype)
    key_mask = torch.ones(B, N, dtype=torch.long)
    if B > 1:
        key_mask[1, N - N // 3 :] = 0
    return q, k, key_mask


QK_CASES = [
    # B, H, Hkv, N, d, window, causal, globals
    (1, 12, 12, 1024, 64, (-1, -1), False, False),
    (2, 12, 12, 1024, 64, (64, 64), False, True),
    (2, 6, 2, 4097, 64, (-1, -1), False, False),  # N not a multiple of the tile; GQA
    (2, 6, 2, 4097, 128, (127, -1), True, False),  # causal sliding window, d = 128
    (1, 4, 4, 4097, 64, (-1, -1), True, False),
    (1, 4, 2, 16384, 64, (64, 64), False, True),
    (1, 2, 1, 16384, 64, (-1, -1), False, False),
    (3, 2, 2, 1, 16, (-1, -1), False, False),  # N = 1
]


@pytest.mark.parametrize("case", QK_CASES, ids=[f"N{c[3]}-H{c[1]}/{c[2]}-w{c[5]}-causal{c[6]}-glob{c[7]}" for c in QK_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_qk_matches_cpu(case, dtype):
    B, H, Hkv, N, d, window, causal, globals_ = case
    q, k, key_mask = _qk_inputs(B, H, Hkv, N, d, seed=N + d, dtype=dtype)
    global_mask = None
    if globals_:
        global_mask = torch.zeros(B, N, dtype=torch.long)
        global_mask[:, 0] = 1
        global_mask[0, N // 2] = 1
    heads = torch.rand(H)
    rows = torch.rand(B, H, N)
    kw = dict(key_mask=key_mask, window=window, causal=causal, global_mask=global_mask)
    kw_gpu = {name: (v.cuda() if isinstance(v, torch.Tensor) else v) for name, v in kw.items()}
    for h, r in [(None, None), (heads, None), (None, rows), (heads, rows[:, 0])]:
        on_cpu = attention_received_qk(q, k, d**-0.5, **kw, head_weights=h, row_weights=r)
        on_gpu = attention_received_qk(
            q.cuda(), k.cuda(), d**-0.5, **kw_gpu,
            head_weights=None if h is None else h.cuda(), row_weights=None if r is None else r.cuda(),
        )
        assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32 and on_gpu.shape == on_cpu.shape
        # both read the same (rounded) inputs and accumulate in float32: they differ only by summation order
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4 * max(1.0, float(on_cpu.abs().max()) / 100), rtol=1e-4)


def test_cuda_qk_matches_torch_softmax():
    q, k, key_mask = (t.cuda() for t in _qk_inputs(2, 4, 2, 700, 64, seed=1))
    got = attention_received_qk(q, k, 0.125, key_mask=key_mask, window=(40, 40))
    kk = k.repeat_interleave(2, dim=1)
    i = torch.arange(700, device="cuda")
    allowed = ((i[None, :] - i[:, None]).abs() <= 40)[None] & key_mask.bool()[:, None, :] & key_mask.bool()[:, :, None]
    scores = (q @ kk.transpose(-1, -2) * 0.125).masked_fill(~allowed[:, None], float("-inf"))
    expected = torch.softmax(scores, -1).nan_to_num(0.0).sum(2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_cuda_qk_bitwise_repeatable_no_sync_non_default_stream():
    q, k, key_mask = (t.cuda() for t in _qk_inputs(2, 6, 2, 3000, 64, seed=2))
    heads = torch.rand(6, device="cuda")
    first = attention_received_qk(q, k, 0.125, key_mask=key_mask, head_weights=heads)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            assert torch.equal(attention_received_qk(q, k, 0.125, key_mask=key_mask, head_weights=heads), first)
        attention_received_qk(q, k, 0.125, key_mask=key_mask, window=(63, -1), causal=True, row_weights=torch.rand(2, 3000, device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = attention_received_qk(q, k, 0.125, key_mask=key_mask, head_weights=heads)
    stream.synchronize()
    assert torch.equal(got, first)


def test_cuda_qk_opcheck():
    q, k, key_mask = (t.cuda() for t in _qk_inputs(2, 6, 2, 150, 32, seed=3))
    glob = torch.zeros(2, 150, dtype=torch.long, device="cuda")
    glob[:, 0] = 1
    torch.library.opcheck(
        torch.ops.pyattn.attention_received_qk.default,
        (q, k, 0.2, key_mask, 16, 16, False, glob, torch.rand(6, device="cuda"), torch.rand(2, 150, device="cuda")),
    )
