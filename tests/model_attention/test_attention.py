"""Attention from a model: the model's own CLS default made explicit, streamed
equal to collected, full-attention models through the same API."""

from __future__ import annotations

import pytest
import torch

import pyattn
from pyattn.model_attention import attention, attention_from_inputs
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer


@pytest.fixture(scope="module")
def model():
    return tiny_longformer(seed=11)


def test_default_global_mask_is_the_models_cls(model):
    ids = torch.randint(3, 64, (2, 30), generator=torch.Generator().manual_seed(0))
    result = attention_from_inputs(model, ids)
    assert result.global_attention_mask.tolist() == [[1] + [0] * 29] * 2
    with torch.no_grad():
        plain = model(input_ids=ids, output_attentions=True)  # the model's own default
    torch.testing.assert_close(result.logits, plain.logits)
    expected = pyattn.layer_attention_received(plain, global_attention_mask=result.global_attention_mask)
    torch.testing.assert_close(result.received.per_layer, expected.per_layer)
    assert result.windows == [4, 16, 8]
    # every valid row sums to 1, so each layer's total is heads x tokens
    torch.testing.assert_close(result.received.per_layer.sum(-1), torch.full((3, 2), 4 * 30.0))


@pytest.mark.parametrize("per_head", [False, True])
def test_streamed_equals_collected(model, per_head):
    ids = torch.randint(3, 64, (2, 37), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 25:] = 0
    mask = torch.zeros_like(ids)
    mask[0, [0, 4]] = 1
    mask[1, 0] = 1
    importance = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    collected = attention_from_inputs(model, ids, attention_mask, mask, importance, per_head=per_head)
    streamed = attention_from_inputs(model, ids, attention_mask, mask, importance, per_head=per_head, stream=True)
    torch.testing.assert_close(streamed.received.per_layer, collected.received.per_layer)
    torch.testing.assert_close(streamed.logits, collected.logits)
    assert streamed.attentions is None
    with pytest.raises(ValueError, match="streamed"):
        streamed.dense(1)
    dense = collected.dense(layer=1, heads=[1])
    assert dense.shape == (2, 1, 37, 37)


def test_no_global_tokens(model):
    ids = torch.randint(3, 64, (1, 20), generator=torch.Generator().manual_seed(3))
    result = attention_from_inputs(model, ids, global_attention_mask=torch.zeros_like(ids), stream=True)
    torch.testing.assert_close(result.received.per_layer.sum(-1), torch.full((3, 1), 4 * 20.0))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_full_attention_models(kind):
    model = tiny_classifier(kind, seed=4)
    model.config._attn_implementation = "eager"
    tokenizer = tiny_tokenizer("bert" if kind == "bert" else "roberta")
    text = sample_text(20, seed=2)
    importance = torch.rand(2, 4, generator=torch.Generator().manual_seed(5))
    result = attention(model, tokenizer, text, head_importance=importance, per_head=True, route="eager")  # the probabilities route
    assert result.windows is None and result.received.per_layer.shape == (2, 1, 4, 22)
    dense = result.dense(layer=0)  # layers are numbered from 0
    torch.testing.assert_close(dense.sum(-1), torch.ones(1, 4, 22))
    expected = dense.sum(2) * importance[0][None, :, None]
    torch.testing.assert_close(result.received.per_layer[0], expected)
    with pytest.raises(ValueError, match="full attention"):
        attention(model, tokenizer, text, stream=True, route="eager")


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_full_attention_padding_rows_are_not_counted(kind):
    """A padded batch gives each document what it gets alone: the padding
    positions' query rows (computed by the model, read by nobody) are not
    counted, as Longformer's are zero."""
    model = tiny_classifier(kind, seed=4)
    model.config._attn_implementation = "eager"
    pad = model.config.pad_token_id
    generator = torch.Generator().manual_seed(3)
    long_ids = torch.randint(5, 60, (1, 22), generator=generator)
    short_ids = torch.randint(5, 60, (1, 12), generator=generator)
    batch = torch.full((2, 22), pad)
    batch[0], batch[1, :12] = long_ids[0], short_ids[0]
    mask = (torch.arange(22)[None] < torch.tensor([[22], [12]])).long()
    position_ids = None
    if kind == "roberta":  # RoBERTa numbers positions from pad + 1 over real tokens
        position_ids = (torch.cumsum(mask, 1) * mask + pad).long()
    extra = {} if position_ids is None else {"position_ids": position_ids}
    batched = attention_from_inputs(model, batch, attention_mask=mask, per_head=True, **extra).received.per_layer
    alone = attention_from_inputs(model, short_ids, attention_mask=torch.ones_like(short_ids), per_head=True,
                                  **({} if position_ids is None else {"position_ids": position_ids[1:, :12]})).received.per_layer
    torch.testing.assert_close(batched[:, 1, :, :12], alone[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[:, 1, :, 12:], torch.zeros(2, 4, 10), atol=1e-6, rtol=0)
    # each layer and head: the real rows each sum to 1, so the columns sum to the real length
    torch.testing.assert_close(batched[:, 1].sum(-1), torch.full((2, 4), 12.0))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_sdpa_models_are_switched_to_eager(kind):
    """transformers 5 builds BERT/RoBERTa with sdpa attention, which returns no
    attention probabilities: route="eager" runs the model eager (same
    outputs) and puts sdpa back (issue 17: the user's model is left as
    found). (The default route reads queries and keys instead:
    tests/models/test_qk_route.py.)"""
    model = tiny_classifier(kind, seed=4)
    model.set_attn_implementation("sdpa")
    tokenizer = tiny_tokenizer("bert" if kind == "bert" else "roberta")
    text = sample_text(15, seed=2)
    with torch.no_grad():
        before = model(**tokenizer(text, return_tensors="pt")).logits
    result = attention(model, tokenizer, text, per_head=True, route="eager")
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(result.dense(layer=0).sum(-1), torch.ones(1, 4, result.received.per_layer.shape[-1]))
    with torch.no_grad():
        torch.testing.assert_close(model(**tokenizer(text, return_tensors="pt")).logits, before, atol=1e-5, rtol=1e-5)


def test_positions_line_up_with_attribution(model):
    tokenizer = tiny_tokenizer("roberta")
    text = sample_text(33, seed=6)
    result = attention(model, tokenizer, text)
    scores = pyattn.attribute(model, tokenizer, text, n_steps=4)
    assert result.received.final_layer.shape == (1, len(scores.tokens))


def test_head_importance_shape_checked(model):
    ids = torch.randint(3, 64, (1, 10))
    with pytest.raises(ValueError, match=r"head_importance must have shape \(L, H\) = \(3, 4\)"):
        attention_from_inputs(model, ids, head_importance=torch.ones(12, 12))


def test_a_model_without_attentions_is_named():
    from transformers.modeling_outputs import SequenceClassifierOutput

    class NoAttentions(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"num_attention_heads": 2, "num_hidden_layers": 1})()
            self.linear = torch.nn.Linear(1, 2)

        def forward(self, input_ids, output_attentions=False, **kwargs):
            return SequenceClassifierOutput(logits=self.linear(input_ids[..., :1].float()), attentions=None)

    with pytest.raises(ValueError, match="NoAttentions returned no attentions with output_attentions=True"):
        attention_from_inputs(NoAttentions(), torch.ones(1, 5, dtype=torch.long))
