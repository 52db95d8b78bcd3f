"""attention_received_qk (attention received from queries and keys, no N x N
matrix) against two independent computations: the readable float64 reference
(pyattn.kernels.reference.attention_received_qk) and torch's own
``torch.softmax(q @ k^T * scale + mask)`` column sums, with the mask written out
here from the contract's rules. Plus: the CUDA kernels' per-tile code run by
the host emulator, repeatability, opcheck and one-line errors."""

from __future__ import annotations

import pytest
import torch

from pyattn.kernels import ops, reference
from testing import cuda_emulator

TILE = 64  # csrc/qk_kernels.h kQKTile


def make_qk(B, H, Hkv, N, d, seed, dtype=torch.float32, device="cpu", spread=1.0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, H, N, d, generator=g) * spread).to(dtype).to(device)
    k = (torch.randn(B, Hkv, N, d, generator=g) * spread).to(dtype).to(device)
    return q, k


def padding_mask(B, N, seed):
    """Item 0 full, later items shorter (at least 1 real token)."""
    mask = torch.ones(B, N, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    for b in range(1, B):
        mask[b, int(torch.randint(1, N + 1, (1,), generator=g)) :] = 0
    return mask


def torch_softmax_received(q, k, scale, key_mask=None, window=(-1, -1), causal=False, global_mask=None):
    """Column sums of torch.softmax(q @ k^T * scale + additive mask) in
    float32, the mask built from the contract's words, rows that see nothing
    (and padded rows) zeroed: (B, H, N, N) probabilities and (B, H, N)
    received."""
    q, k = q.float(), k.float()
    B, H, N, _ = q.shape
    k = k.repeat_interleave(H // k.shape[1], dim=1)
    i = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    allowed = torch.ones(N, N, dtype=torch.bool)
    if window[0] >= 0:
        allowed = allowed & (j >= i - window[0])
    if window[1] >= 0:
        allowed = allowed & (j <= i + window[1])
    if causal:
        allowed = allowed & (j <= i)
    allowed = allowed.expand(B, N, N)
    real = torch.ones(B, N, dtype=torch.bool) if key_mask is None else key_mask.bool().cpu()
    if global_mask is not None:
        glob = global_mask.bool().cpu()
        allowed = allowed | glob[:, :, None] | glob[:, None, :]
    allowed = allowed & real[:, None, :] & real[:, :, None]
    bias = torch.zeros(B, 1, N, N).masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax((q.cpu() @ k.cpu().transpose(-1, -2)) * scale + bias, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)  # rows that see nothing
    return probs, probs.sum(2)


# (B, H, Hkv, N, d, window, causal, globals, padded)
CASES = {
    "full": (2, 3, 3, 50, 16, (-1, -1), False, False, False),
    "padding": (3, 2, 2, 70, 8, (-1, -1), False, False, True),
    "N=1": (2, 2, 1, 1, 8, (-1, -1), False, False, False),
    "N=tile": (1, 2, 2, TILE, 8, (-1, -1), False, False, False),
    "N=tile+1": (1, 2, 2, TILE + 1, 8, (-1, -1), False, False, True),
    "N=3 tiles-5": (2, 2, 2, 3 * TILE - 5, 8, (-1, -1), False, False, True),
    "symmetric window": (2, 2, 2, 300, 8, (16, 16), False, False, True),
    "window 0": (1, 2, 2, 70, 8, (0, 0), False, False, False),
    "asymmetric window": (1, 2, 2, 200, 8, (3, 40), False, False, False),
    "causal": (2, 2, 2, 150, 8, (-1, -1), True, False, True),
    "causal sliding window": (2, 2, 1, 260, 8, (31, -1), True, False, True),
    "global tokens, window": (2, 2, 2, 300, 8, (8, 8), False, True, True),
    "global tokens, full": (2, 2, 2, 90, 8, (-1, -1), False, True, True),
    "grouped-query H=6 Hkv=2": (2, 6, 2, 130, 16, (-1, -1), False, False, True),
    "grouped-query window": (1, 6, 2, 200, 16, (20, 20), False, False, False),
    "d=100 (not a chunk multiple)": (1, 2, 1, 70, 100, (-1, -1), False, False, False),
    # the CPU kernel's chunks (128 rows x 256 columns): several per row and column, merged
    "full, N=600 d=64": (2, 2, 1, 600, 64, (-1, -1), False, False, True),
    "causal window, N=600 d=64": (1, 3, 3, 600, 64, (300, -1), True, False, False),
}


def case_inputs(case, seed=0, dtype=torch.float32, device="cpu"):
    B, H, Hkv, N, d, window, causal, globals_, padded = case
    q, k = make_qk(B, H, Hkv, N, d, seed, dtype, device)
    key_mask = padding_mask(B, N, seed).to(device) if padded else None
    global_mask = None
    if globals_:
        global_mask = torch.zeros(B, N, dtype=torch.long)
        global_mask[:, 0] = 1
        global_mask[0, N // 2] = 1
        global_mask[-1, N - 1] = 1  # padded in the last item when it is short
        global_mask = global_mask.to(device)
    kwargs = dict(key_mask=key_mask, window=window, causal=causal, global_mask=global_mask)
    return q, k, d**-0.5, kwargs


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference_and_torch_softmax(name):
    q, k, scale, kw = case_inputs(CASES[name], seed=len(name))
    got = ops.attention_received_qk(q, k, scale, **kw)
    assert got.dtype == torch.float32 and got.shape == q.shape[:3]
    expected = reference.attention_received_qk(q, k, scale, **kw, out_dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    _, by_torch = torch_softmax_received(q, k, scale, **kw)
    torch.testing.assert_close(got, by_torch, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["padding", "symmetric window", "causal sliding window", "global tokens, window", "grouped-query H=6 Hkv=2"])
def test_head_and_row_weights(name):
    q, k, scale, kw = case_inputs(CASES[name], seed=1)
    B, H, N, _ = q.shape
    g = torch.Generator().manual_seed(2)
    head_weights = torch.rand(H, generator=g) - 0.3  # signed: nothing assumes weights >= 0
    probs, _ = torch_softmax_received(q, k, scale, **kw)
    for row_weights in (None, torch.rand(B, N, generator=g), torch.rand(B, H, N, generator=g)):
        w = torch.ones(B, H, N) if row_weights is None else (row_weights if row_weights.dim() == 3 else row_weights[:, None].expand(B, H, N))
        per_head = torch.einsum("bhij,bhi->bhj", probs, w)
        got = ops.attention_received_qk(q, k, scale, **kw, row_weights=row_weights)
        torch.testing.assert_close(got, per_head, atol=1e-5, rtol=1e-5)
        fused = ops.attention_received_qk(q, k, scale, **kw, head_weights=head_weights, row_weights=row_weights)
        assert fused.shape == (B, N)
        torch.testing.assert_close(fused, torch.einsum("bhj,h->bj", per_head, head_weights), atol=1e-5, rtol=1e-5)
        expected = reference.attention_received_qk(q, k, scale, **kw, head_weights=head_weights, row_weights=row_weights, out_dtype=torch.float64)
        torch.testing.assert_close(fused.double(), expected, atol=1e-5, rtol=1e-5)


def test_cls_row_from_one_hot_row_weights():
    """row_weights = one-hot of row 0 gives the CLS row of the attention matrix."""
    q, k, scale, kw = case_inputs(CASES["padding"], seed=3)
    B, H, N, _ = q.shape
    one_hot = torch.zeros(B, N)
    one_hot[:, 0] = 1
    probs, _ = torch_softmax_received(q, k, scale, **kw)
    got = ops.attention_received_qk(q, k, scale, **kw, row_weights=one_hot)
    torch.testing.assert_close(got, probs[:, :, 0, :], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["padding", "causal sliding window", "global tokens, window", "window 0"])
def test_rows_of_the_reconstructed_distribution_sum_to_one(name):
    """One-hot row weights pick one row of the distribution the op reconstructs
    from pass 1's lse: each sums to 1 (0 for padded rows); and the total
    received is the number of real rows."""
    q, k, scale, kw = case_inputs(CASES[name], seed=4)
    B, H, N, _ = q.shape
    real = torch.ones(B, N) if kw["key_mask"] is None else kw["key_mask"].float()
    for i in sorted({0, 1, N // 3, N - 1}):
        one_hot = torch.zeros(B, H, N)
        one_hot[:, :, i] = 1
        row = ops.attention_received_qk(q, k, scale, **kw, row_weights=one_hot)
        torch.testing.assert_close(row.sum(-1), real[:, i, None].expand(B, H), atol=1e-5, rtol=0)
        # and it is the reference's row, in float64
        dense_row = reference.attention_received_qk(q, k, scale, **kw, row_weights=one_hot, out_dtype=torch.float64)
        torch.testing.assert_close(row.double(), dense_row, atol=1e-6, rtol=1e-5)
    total = ops.attention_received_qk(q, k, scale, **kw).sum(-1)
    torch.testing.assert_close(total, real.sum(1, keepdim=True).expand(B, H), atol=1e-4, rtol=1e-6)


def test_fully_padded_item_and_large_scores():
    """An item with no real token receives nothing; scores of several hundred
    (no overflow: the row max is subtracted) still give distributions."""
    q, k = make_qk(2, 2, 2, 80, 8, seed=5, spread=8.0)
    key_mask = torch.ones(2, 80, dtype=torch.long)
    key_mask[1] = 0
    got = ops.attention_received_qk(q, k, 1.0, key_mask=key_mask)
    assert torch.all(got[1] == 0)
    assert torch.isfinite(got).all()
    expected = reference.attention_received_qk(q, k, 1.0, key_mask=key_mask, out_dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    """Half inputs are read exactly and accumulated in float32: against the
    float64 reference on the same (rounded) values to 1e-5; against the float32
    originals only as close as the inputs' rounding allows (documented
    tolerance: 2e-2 relative to the largest column for bfloat16, 4e-3 for
    float16; scores are q.k / sqrt(d) ~ N(0, 1))."""
    q, k, scale, kw = case_inputs(CASES["causal sliding window"], seed=6)
    qh, kh = q.to(dtype), k.to(dtype)
    got = ops.attention_received_qk(qh, kh, scale, **kw)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference.attention_received_qk(qh, kh, scale, **kw, out_dtype=torch.float64), atol=1e-5, rtol=1e-5)
    full = ops.attention_received_qk(q, k, scale, **kw)
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    assert (got - full).abs().max() <= tol * full.abs().max()


def test_non_contiguous_inputs():
    q, k, scale, kw = case_inputs(CASES["grouped-query H=6 Hkv=2"], seed=7)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B, N, H, d) storage, as models hold it
    kt = k.transpose(1, 2).contiguous().transpose(1, 2)
    assert not qt.is_contiguous()
    assert torch.equal(ops.attention_received_qk(qt, kt, scale, **kw), ops.attention_received_qk(q, k, scale, **kw))


def test_bitwise_repeatable_across_runs_and_thread_counts():
    q, k, scale, kw = case_inputs(CASES["global tokens, window"], seed=8)
    heads = torch.rand(q.shape[1])
    first = ops.attention_received_qk(q, k, scale, **kw, head_weights=heads)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for _ in range(2):
                assert torch.equal(ops.attention_received_qk(q, k, scale, **kw, head_weights=heads), first)
    finally:
        torch.set_num_threads(threads)


def test_empty_inputs():
    q, k = make_qk(0, 2, 2, 5, 4, seed=0)
    assert ops.attention_received_qk(q, k, 1.0).shape == (0, 2, 5)
    q, k = make_qk(2, 2, 2, 0, 4, seed=0)
    assert ops.attention_received_qk(q, k, 1.0).shape == (2, 2, 0)
    q, k = make_qk(2, 2, 1, 3, 0, seed=0)  # d = 0: every score 0, uniform rows
    torch.testing.assert_close(ops.attention_received_qk(q, k, 1.0), torch.ones(2, 2, 3))


def test_not_differentiable():
    q, k = make_qk(1, 2, 2, 10, 4, seed=0)
    q.requires_grad_()
    out = ops.attention_received_qk(q, k, 0.5)
    with pytest.raises(RuntimeError, match="attention_received_qk is not differentiable"):
        out.sum().backward()


def test_opcheck():
    q, k, scale, kw = case_inputs(CASES["global tokens, window"], seed=9)
    B, H, N, _ = q.shape
    op = torch.ops.pyattn.attention_received_qk.default
    for heads, rows in [(None, None), (torch.rand(H), torch.rand(B, N)), (None, torch.rand(B, H, N))]:
        torch.library.opcheck(op, (q, k, scale, kw["key_mask"], 8, 8, False, kw["global_mask"], heads, rows))
    qh, kh = make_qk(2, 6, 2, 70, 8, seed=1, dtype=torch.bfloat16)
    torch.library.opcheck(op, (qh, kh, 0.3, None, 31, -1, True, None, None, None))


BAD = [
    ("q must be 4-D (B, H, N, d)", lambda q, k: dict(q=q[0])),
    ("k must be 4-D (B, Hkv, N, d)", lambda q, k: dict(k=k[0])),
    ("k has shape [2, 2, 7, 4] but its dimension 2 (sequence length N) must be 8 to match q", lambda q, k: dict(k=k[:, :, :7])),
    ("k has shape [2, 2, 8, 3] but its dimension 3 (head size d) must be 4 to match q", lambda q, k: dict(k=k[..., :3])),
    ("k has 4 heads but q's 6 heads must be a multiple of them", lambda q, k: dict(k=torch.cat([k, k], 1))),
    ("key_mask must have shape (B, N) = (2, 8) to match q", lambda q, k: dict(key_mask=torch.ones(2, 7, dtype=torch.long))),
    ("global_mask must have shape (B, N) = (2, 8) to match q", lambda q, k: dict(global_mask=torch.ones(8, dtype=torch.long))),
    ("head_weights must have shape (H,) = (6,) to match q's heads", lambda q, k: dict(head_weights=torch.ones(2))),
    ("row_weights must have shape (B, N) = (2, 8) or (B, H, N) = (2, 6, 8) to match q", lambda q, k: dict(row_weights=torch.ones(2, 2, 8))),
    ("q must be float32, float16 or bfloat16, got", lambda q, k: dict(q=q.double(), k=k.double())),
    ("k has dtype", lambda q, k: dict(k=k.half())),
    ("key_mask must be bool or integer (nonzero = set), got", lambda q, k: dict(key_mask=torch.ones(2, 8))),
    ("row_weights must be float16, bfloat16, float32 or float64, got", lambda q, k: dict(row_weights=torch.ones(2, 8, dtype=torch.long))),
    ("scale must be a finite float", lambda q, k: dict(scale=float("nan"))),
    ("k is on meta but q is on cpu", lambda q, k: dict(k=k.to("meta"))),
]


@pytest.mark.parametrize("message,change", BAD, ids=[m[:40] for m, _ in BAD])
def test_bad_inputs_one_line_naming_the_argument(message, change):
    q, k = make_qk(2, 6, 2, 8, 4, seed=0)
    args = dict(q=q, k=k, scale=0.5, key_mask=None, global_mask=None, head_weights=None, row_weights=None)
    args.update(change(q, k))
    wrapper_args = dict(args)
    with pytest.raises(RuntimeError) as wrapper_error:
        ops.attention_received_qk(
            wrapper_args.pop("q"), wrapper_args.pop("k"), wrapper_args.pop("scale"), **wrapper_args
        )
    text = str(wrapper_error.value)
    assert message in text and "\n" not in text.strip()
    # the compiled op's own check says the same (bypassing the Python checks)
    with pytest.raises(RuntimeError) as op_error:
        torch.ops.pyattn.attention_received_qk.default(
            args["q"], args["k"], args["scale"], args["key_mask"], -1, -1, False,
            args["global_mask"], args["head_weights"], args["row_weights"],
        )
    assert message in str(op_error.value).splitlines()[0]


@pytest.mark.parametrize("window", [(2,), (1.5, 2), (True, 2), "ab"])
def test_bad_window(window):
    q, k = make_qk(1, 2, 2, 8, 4, seed=0)
    with pytest.raises(RuntimeError, match="window"):
        ops.attention_received_qk(q, k, 0.5, window=window)


# --- The CUDA kernels' per-tile code on the host (tests/harness/emulate_cuda.cpp)


@pytest.fixture(scope="module")
def emulator():
    return cuda_emulator()


EMULATED = ["padding", "N=1", "N=tile+1", "N=3 tiles-5", "symmetric window", "causal sliding window", "global tokens, window", "grouped-query window", "d=100 (not a chunk multiple)"]


@pytest.mark.parametrize("name", EMULATED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_emulated_cuda_matches_reference(emulator, name, dtype):
    q, k, scale, kw = case_inputs(CASES[name], seed=10, dtype=dtype)
    B, H, N, _ = q.shape
    g = torch.Generator().manual_seed(11)
    heads, rows = torch.rand(H, generator=g), torch.rand(B, H, N, generator=g)
    for weights in [(None, None), (heads, rows[:, 0]), (None, rows)]:
        got = emulator.attention_received_qk(q, k, scale, kw["key_mask"], *kw["window"], kw["causal"], kw["global_mask"], *weights)
        expected = reference.attention_received_qk(q, k, scale, **kw, head_weights=weights[0], row_weights=weights[1], out_dtype=torch.float64)
        assert not torch.isnan(got).any(), "an output element no thread wrote"
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_emulated_cuda_bad_input_is_the_same_check(emulator):
    q, k = make_qk(2, 6, 2, 8, 4, seed=0)
    with pytest.raises(RuntimeError, match="k has 4 heads but q's 6 heads"):
        emulator.attention_received_qk(q, torch.cat([k, k], 1), 0.5, None, -1, -1, False, None, None, None)
