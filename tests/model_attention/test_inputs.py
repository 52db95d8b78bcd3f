"""What attention_from_inputs is given: padding on either side, masks that
are not 0/1 or hold no real token, 1-D inputs, inputs longer than the
position table, and attention rows that are not numbers. Each is either read
as the model reads it (checked against the model's own probabilities) or
refused in one line naming the argument."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models"))
from test_qk_route import eager_attentions, tiny_model  # noqa: E402

from pyattn.errors import InputError, NotADistribution  # noqa: E402
from pyattn.model_attention import attention_from_inputs  # noqa: E402
from pyattn.model_attention.received import check_full_rows  # noqa: E402
from pyattn.model_attention.rollout import dense_rollout  # noqa: E402


def left_padded(lengths, n, pad=0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 64, (len(lengths), n), generator=generator)
    mask = (torch.arange(n)[None] >= n - torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


@pytest.mark.parametrize("route", ["qk", "eager"])
def test_a_left_padded_decoder_rolls_out_over_its_real_tokens(route):
    """Llama pads on the left: rollout of each item equals the dense rollout of
    the model's own probabilities over that item's real tokens, from its last."""
    model = tiny_model("llama")
    ids, mask = left_padded([14, 9], 14)
    rolled = attention_from_inputs(model, ids, mask, route=route, rollout=True).rollout
    probabilities = eager_attentions(model, ids, mask)
    for b in range(2):
        real = mask[b].nonzero().flatten()
        own = dense_rollout([a[b : b + 1][:, :, real][:, :, :, real].float() for a in probabilities], start=len(real) - 1)[0]
        torch.testing.assert_close(rolled[b, real], own, atol=1e-5, rtol=1e-5)
        assert float(rolled[b, mask[b] == 0].abs().sum()) == 0.0


def test_a_rollout_that_would_start_at_padding_is_refused():
    """BERT classifies from token 0: left padding would start rollout at a pad."""
    model = tiny_model("bert")
    ids, mask = left_padded([14, 9], 14)
    for route in ("qk", "eager"):
        with pytest.raises(InputError, match=r"rollout=True starts at token 0.*attention_mask\[1\] marks it as padding"):
            attention_from_inputs(model, ids, mask, route=route, rollout=True)
    attention_from_inputs(model, ids, mask)  # without rollout the model's own reading stands


@pytest.mark.parametrize("mask_values, match", [
    ([1, 1, 2, 1, 1, 1], r"attention_mask must hold only 0 and 1, got 2"),
    ([1, 1, 1, 1, 1, -1], r"attention_mask must hold only 0 and 1, got -1"),
    ([0, 0, 0, 0, 0, 0], r"attention_mask\[0\] is all 0"),
])
def test_masks_the_routes_would_read_differently_are_refused(mask_values, match):
    model = tiny_model("bert")
    ids = torch.randint(5, 64, (1, 6))
    for route in ("qk", "eager"):
        with pytest.raises(InputError, match=match):
            attention_from_inputs(model, ids, torch.tensor([mask_values]), route=route)


def test_one_dimensional_ids_and_mask_are_one_item():
    model = tiny_model("bert")
    ids = torch.randint(5, 64, (12,))
    for route in ("qk", "eager"):
        flat = attention_from_inputs(model, ids, torch.ones(12, dtype=torch.long), route=route, rollout=True)
        batched = attention_from_inputs(model, ids[None], torch.ones(1, 12, dtype=torch.long), route=route, rollout=True)
        torch.testing.assert_close(flat.received.per_layer, batched.received.per_layer)
        torch.testing.assert_close(flat.rollout, batched.rollout)


def test_more_tokens_than_position_embeddings_is_refused_and_rotary_models_are_not():
    bert = tiny_model("bert")  # 512 absolute positions
    with pytest.raises(InputError, match=r"input_ids has 513 tokens but BertForSequenceClassification has position embeddings for 512"):
        attention_from_inputs(bert, torch.randint(5, 64, (1, 513)))
    llama = tiny_model("llama")  # rotary: max_position_embeddings 128 is no table
    assert attention_from_inputs(llama, torch.randint(5, 64, (1, 130))).received.per_layer.shape[-1] == 130


def test_rows_of_nan_are_not_a_distribution():
    model = tiny_model("bert")
    rows = torch.full((1, 1, 3, 3), float("nan"))
    with pytest.raises(NotADistribution, match="sums to nan"):
        check_full_rows(model, 0, rows, 3, None)


def test_a_batch_for_a_decoder_without_a_pad_token_is_refused():
    """transformers' decoder classifiers find each item's last token from the
    pad id: with none, a batch of two is refused in pyattn's words, one item is read."""
    model = tiny_model("llama")
    model.config.pad_token_id = None
    ids = torch.randint(5, 64, (2, 8))
    for route in ("qk", "eager"):
        with pytest.raises(InputError, match=r"input_ids holds 2 items but LlamaForSequenceClassification has no config.pad_token_id"):
            attention_from_inputs(model, ids, route=route)
    assert attention_from_inputs(model, ids[:1]).received.per_layer.shape == (3, 1, 8)


def test_rollout_starts_where_the_classifier_reads():
    """A BERT built as a decoder (causal attention) still classifies from its
    first token, so rollout starts there: equal to the dense rollout of its own
    probabilities from token 0."""
    import copy

    model = tiny_model("bert")
    model.config.is_decoder = True
    for layer in model.bert.encoder.layer:
        layer.attention.self.is_causal = True
    ids = torch.randint(5, 64, (1, 10))
    probabilities = eager_attentions(copy.deepcopy(model), ids, torch.ones_like(ids))
    causal = torch.tril(torch.ones(10, 10, dtype=torch.bool))
    assert all(bool((a[0, :, ~causal] == 0).all()) for a in probabilities)  # the model attends causally
    own = dense_rollout([a.float() for a in probabilities], start=0)[0]
    for route in ("qk", "eager"):
        torch.testing.assert_close(attention_from_inputs(model, ids, route=route, rollout=True).rollout[0], own, atol=1e-5, rtol=1e-5)
