"""The conversion proven right, not just self-consistent: attention
probabilities recomputed from each layer's own query/key projections under the
band + global mask must equal band_to_dense of the model's output."""

from __future__ import annotations

import math

import pytest
import torch

import pyattn
from testing import run_longformer, tiny_longformer


def recompute_attention(run, layer_index: int) -> torch.Tensor:
    """Dense (B, H, N, N) attention of one layer from first principles.

    Non-global row i: softmax over keys j in its window (|i - j| <= w/2) and
    the global keys, padding excluded, with scores q_i . k_j / sqrt(d) from the
    layer's query/key projections. Global row g: softmax over every
    non-padding key with the *_global projections.
    """
    attention = run.model.longformer.encoder.layer[layer_index].attention.self
    hidden = run.hidden_states[layer_index].double()  # (B, N_pad, dim)
    B, N_pad, _ = hidden.shape
    N = run.input_ids.shape[1]
    H, d = attention.num_heads, attention.head_dim
    half = run.model.config.attention_window[layer_index] // 2

    def heads(x):
        return x.view(B, N_pad, H, d).transpose(1, 2)  # (B, H, N_pad, d)

    def project(linear, x):
        return torch.nn.functional.linear(x, linear.weight.double(), linear.bias.double())

    q = heads(project(attention.query, hidden)) / math.sqrt(d)
    k = heads(project(attention.key, hidden))
    q_global = heads(project(attention.query_global, hidden)) / math.sqrt(d)
    k_global = heads(project(attention.key_global, hidden))

    valid = torch.zeros(B, N_pad, dtype=torch.bool)
    valid[:, :N] = run.attention_mask.bool()
    is_global = torch.zeros(B, N_pad, dtype=torch.bool)
    is_global[:, :N] = run.global_attention_mask.bool()

    positions = torch.arange(N_pad)
    in_window = (positions[:, None] - positions[None, :]).abs() <= half  # (i, j)
    # Keys a non-global row may attend: window keys that are not global, plus
    # every global key; never padding.
    allowed = (in_window[None] & ~is_global[:, None, :]) | is_global[:, None, :]
    allowed &= valid[:, None, :]
    scores = (q @ k.transpose(-1, -2)).masked_fill(~allowed[:, None], float("-inf"))
    local_rows = torch.softmax(scores, dim=-1)

    global_scores = (q_global @ k_global.transpose(-1, -2)).masked_fill(~valid[:, None, None, :], float("-inf"))
    global_rows = torch.softmax(global_scores, dim=-1)

    dense = torch.where(is_global[:, None, :, None], global_rows, local_rows)
    dense = dense.masked_fill(~valid[:, None, :, None], 0.0)  # padding rows are 0
    return dense[:, :, :N, :N]


def test_fixture_has_what_the_proof_needs(longformer_run):
    windows = longformer_run.model.config.attention_window
    assert len(set(windows)) == len(windows) >= 3
    counts = longformer_run.global_attention_mask.sum(1).tolist()
    assert counts[0] != counts[1] and max(counts) >= 2
    assert longformer_run.attention_mask[1].sum() < longformer_run.attention_mask.shape[1]
    # global token 3 lies in the window of token 0 (and of its neighbours)
    assert 3 <= min(windows) // 2 or 3 <= max(windows) // 2
    # the model padded internally: global_attentions are longer than N
    N = longformer_run.input_ids.shape[1]
    assert longformer_run.output.global_attentions[0].shape[2] > N


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_band_to_dense_equals_first_principles(longformer_run, layer_index):
    out = longformer_run.output
    dense = pyattn.band_to_dense(
        out.attentions[layer_index], out.global_attentions[layer_index], longformer_run.global_attention_mask
    )
    expected = recompute_attention(longformer_run, layer_index).float()
    torch.testing.assert_close(dense, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_attention_received_equals_first_principles_column_sums(longformer_run, layer_index):
    out = longformer_run.output
    received = pyattn.attention_received(
        out.attentions[layer_index], out.global_attentions[layer_index], longformer_run.global_attention_mask
    )
    expected = recompute_attention(longformer_run, layer_index).sum(2).float()
    torch.testing.assert_close(received, expected, atol=1e-5, rtol=1e-5)


def test_valid_rows_sum_to_one_on_model_output(longformer_run):
    out = longformer_run.output
    valid = longformer_run.attention_mask.bool()
    for layer_index in range(len(out.attentions)):
        dense = pyattn.band_to_dense(
            out.attentions[layer_index], out.global_attentions[layer_index], longformer_run.global_attention_mask
        )
        row_sums = dense.sum(-1)  # (B, H, N)
        torch.testing.assert_close(row_sums[valid[:, None, :].expand_as(row_sums)], torch.ones(()).expand(int(valid.sum()) * dense.shape[1]), atol=1e-5, rtol=0)
        assert (row_sums[(~valid)[:, None, :].expand_as(row_sums)] == 0).all()


def test_cls_default_and_no_globals():
    """The model's own CLS default (no mask passed), and an all-zero mask
    (X = 0, global_attentions is None) both convert to matrices whose rows
    sum to 1."""
    model = tiny_longformer(windows=(4, 8), seed=3)
    ids = torch.randint(3, 64, (1, 21), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        default = model(input_ids=ids, output_attentions=True)
    cls_mask = torch.zeros_like(ids)
    cls_mask[:, 0] = 1
    received = pyattn.layer_attention_received(default, global_attention_mask=cls_mask, per_head=True)
    assert received.per_layer.shape == (2, 1, 4, 21)
    torch.testing.assert_close(received.per_layer.sum(-1), torch.full((2, 1, 4), 21.0), atol=1e-4, rtol=0)

    run = run_longformer(model, ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert run.output.global_attentions is None or all(g is None for g in run.output.global_attentions)
    dense = pyattn.band_to_dense(run.output.attentions[1])
    torch.testing.assert_close(dense.sum(-1), torch.ones(1, 4, 21), atol=1e-5, rtol=0)
