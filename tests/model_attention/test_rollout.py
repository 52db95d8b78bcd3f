"""Attention rollout in banded form equals rollout on the dense matrices."""

from __future__ import annotations

import pytest
import torch

from pyattn.kernels import reference
from pyattn.model_attention.rollout import attention_rollout, dense_rollout


def dense_layers(run):
    out = run.output
    return [reference.band_to_dense(a.double(), g.double(), run.global_attention_mask) for a, g in zip(out.attentions, out.global_attentions)]


@pytest.mark.parametrize("weighted", [False, True])
def test_banded_rollout_equals_dense_rollout(longformer_run, weighted):
    importance = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) + 0.1 if weighted else None
    got = attention_rollout(longformer_run.output, global_attention_mask=longformer_run.global_attention_mask, head_importance=importance)
    expected = dense_rollout(dense_layers(longformer_run), None if importance is None else list(importance))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(2), atol=1e-5, rtol=0)  # a distribution over tokens
    assert (got[1, 30:] == 0).all()  # padding receives nothing


def test_rollout_written_out_for_one_item(longformer_run):
    """The matrix product itself, spelled out: row 0 of Â_3 Â_2 Â_1."""
    layers = dense_layers(longformer_run)
    product = None
    for dense in layers:  # Â_1 first
        mean = dense[0].mean(0)
        a_hat = 0.5 * mean + 0.5 * torch.eye(mean.shape[0], dtype=torch.float64)
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)
        product = a_hat if product is None else a_hat @ product
    got = attention_rollout(longformer_run.output, global_attention_mask=longformer_run.global_attention_mask)
    torch.testing.assert_close(got[0].double(), product[0], atol=1e-6, rtol=1e-5)


def test_start_out_of_range(longformer_run):
    with pytest.raises(IndexError, match="start position 99"):
        attention_rollout(longformer_run.output, global_attention_mask=longformer_run.global_attention_mask, start=99)
