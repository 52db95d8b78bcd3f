"""The fast Longformer self-attention equals transformers' own: layer
outputs, logits, input and parameter gradients, for per-layer windows,
several global tokens, padding and batch > 1; weights and class untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyattn
from pyattn.models.fast_attention import banded_self_attention, fast_attention_context, fast_longformer_attention
from testing import assert_close_scaled, sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer


def _batch(dtype_model=None):
    """Batch of three, N = 37 (padded to 48 inside): item 0 three global
    tokens (0, 3, 10: inside each other's windows), item 1 one global (5) and
    padding from 30, item 2 two globals (0, 19) and padding from 20, so the
    last global sits next to the padding."""
    generator = torch.Generator().manual_seed(4)
    B, N = 3, 37
    ids = torch.randint(3, 64, (B, N), generator=generator)
    attention_mask = torch.ones(B, N, dtype=torch.long)
    for item, start in ((1, 30), (2, 20)):
        attention_mask[item, start:] = 0
        ids[item, start:] = 1
    global_mask = torch.zeros(B, N, dtype=torch.long)
    global_mask[0, [0, 3, 10]] = 1
    global_mask[1, 5] = 1
    global_mask[2, [0, 19]] = 1
    return ids, attention_mask, global_mask


def _run(model, ids, attention_mask, global_mask, fast: bool, dtype=torch.float32):
    embeddings = model.longformer.embeddings.word_embeddings(ids).detach().to(dtype).requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with fast_longformer_attention(model) if fast else torch.enable_grad():
        output = model(inputs_embeds=embeddings, attention_mask=attention_mask, global_attention_mask=global_mask, output_hidden_states=True)
    weights = [torch.linspace(-1, 1, h.shape[-1], dtype=dtype) for h in output.hidden_states]
    loss = output.logits.softmax(-1)[:, 1].sum() + 1e-2 * sum((h * w).sum() for h, w in zip(output.hidden_states, weights))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output, embeddings.grad.clone(), grads


@pytest.mark.parametrize("windows", [(4, 16, 8), (8, 8)])
# float32 only: in float64 transformers' own gradients are NaN for padded
# items (its float64 mask minimum becomes -inf in its float32 softmax)
@pytest.mark.parametrize("dtype", [torch.float32])
def test_equal_to_transformers_outputs_and_gradients(windows, dtype):
    model = tiny_longformer(windows=windows, seed=5).to(dtype)
    ids, attention_mask, global_mask = _batch()
    reference, reference_input_grad, reference_grads = _run(model, ids, attention_mask, global_mask, fast=False, dtype=dtype)
    fast, fast_input_grad, fast_grads = _run(model, ids, attention_mask, global_mask, fast=True, dtype=dtype)
    assert_close_scaled(fast.logits, reference.logits)
    for layer, (a, b) in enumerate(zip(fast.hidden_states, reference.hidden_states)):
        assert_close_scaled(a, b, msg=lambda m: f"layer {layer}: {m}")
    assert_close_scaled(fast_input_grad, reference_input_grad)
    assert fast_grads.keys() == reference_grads.keys()
    assert any("query_global" in name for name in fast_grads)  # the global projections get their gradient
    # a key bias's true gradient is zero (softmax cancels it): what is left is
    # rounding of terms as large as the model's largest gradient
    largest = max(float(g.abs().max()) for g in reference_grads.values())
    for name in reference_grads:
        assert_close_scaled(fast_grads[name], reference_grads[name], msg=lambda m: f"{name}: {m}", scale=largest)


def test_one_layer_without_global_tokens():
    model = tiny_longformer(windows=(8,), seed=6)
    module = model.longformer.encoder.layer[0].attention.self
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 24, 32, generator=generator)
    mask = torch.zeros(2, 24)
    mask[1, 17:] = torch.finfo(torch.float32).min  # padding, as the encoder passes it
    masked, is_global = mask < 0, mask > 0
    expected = module(hidden, attention_mask=mask, is_index_masked=masked, is_index_global_attn=is_global, is_global_attn=False)[0]
    got = banded_self_attention(module, hidden, mask, masked, is_global, False)
    assert_close_scaled(got, expected)
    assert float(got.detach()[1, 17:].abs().max()) == 0.0  # padding rows are zero, as in transformers


@pytest.mark.parametrize("n_global", [1, 3, 8, 12])
def test_global_rows_both_routes(n_global):
    """Few global tokens (heads x globals < hidden) take the reassociated
    route, many take the projected one: both equal transformers' module,
    forward and input gradient, with padding in the batch."""
    model = tiny_longformer(windows=(8,), seed=7)  # hidden 32, 4 heads: 8 or more globals take the projected route
    module = model.longformer.encoder.layer[0].attention.self
    generator = torch.Generator().manual_seed(n_global)
    with torch.no_grad():  # initialised biases are zero: make them count
        for linear in (module.query_global, module.key_global, module.value_global, module.query, module.key, module.value):
            linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator))
    hidden = torch.randn(2, 48, 32, generator=generator, requires_grad=True)
    mask = torch.zeros(2, 48)
    mask[1, 40:] = torch.finfo(torch.float32).min  # padding, as the encoder passes it
    positions = torch.randperm(40, generator=generator)[:n_global]
    mask[:, positions] = 10000.0  # global, as the encoder passes it
    masked, is_global = mask < 0, mask > 0
    expected = module(hidden, attention_mask=mask, is_index_masked=masked, is_index_global_attn=is_global, is_global_attn=True)[0]
    (expected_grad,) = torch.autograd.grad((expected * torch.linspace(-1, 1, 32)).sum(), hidden)
    got = banded_self_attention(module, hidden, mask, masked, is_global, True)
    (got_grad,) = torch.autograd.grad((got * torch.linspace(-1, 1, 32)).sum(), hidden)
    assert_close_scaled(got, expected)
    assert_close_scaled(got_grad, expected_grad)


def test_weights_class_and_forward_untouched():
    model = tiny_longformer(seed=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids, attention_mask, global_mask = _batch()
    with fast_longformer_attention(model):
        with fast_longformer_attention(model):  # nested use is harmless
            model(input_ids=ids, attention_mask=attention_mask, global_attention_mask=global_mask)
        # attention probabilities asked for: transformers' own forward answers
        with_attentions = model(input_ids=ids, attention_mask=attention_mask, global_attention_mask=global_mask, output_attentions=True)
    plain = model(input_ids=ids, attention_mask=attention_mask, global_attention_mask=global_mask, output_attentions=True)
    for a, b in zip(with_attentions.attentions, plain.attentions):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert type(model).__name__ == "LongformerForSequenceClassification"


def test_attribution_and_importance_equal_with_and_without():
    model = tiny_longformer(seed=9)
    tokenizer = tiny_tokenizer("roberta")
    text = sample_text(30, seed=3)
    slow = pyattn.attribute(model, tokenizer, text, n_steps=9, fast_attention=False)
    fast = pyattn.attribute(model, tokenizer, text, n_steps=9, fast_attention=True)
    default = pyattn.attribute(model, tokenizer, text, n_steps=9)
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-6 * np.abs(slow.scores).max())
    np.testing.assert_array_equal(default.scores, fast.scores)  # on by default for Longformer
    texts, labels = [sample_text(12, seed=s) for s in range(2)], [0, 2]
    for importance in (pyattn.head_gate_importance, pyattn.taylor_importance):
        a = importance(model, tokenizer, texts, labels, progress=False, fast_attention=False)
        b = importance(model, tokenizer, texts, labels, progress=False, fast_attention=True)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_fast_attention_needs_a_longformer():
    with pytest.raises(ValueError, match="fast_attention=True needs a Longformer model; BertForSequenceClassification"):
        with fast_attention_context(tiny_classifier("bert"), True):
            pass


def test_under_bfloat16_autocast_as_close_to_float32_as_transformers():
    """Under bfloat16 autocast (the default with fast attention since it is
    proven here): logits, every layer's output and the input gradient are at
    least as close to the float32 model's as transformers' own attention
    under the same autocast is (within 1.5x), and
    both are within bfloat16's precision of float32 (8 bits: relative
    rounding 2**-8 per operation)."""
    model = tiny_longformer(windows=(4, 16, 8), seed=5)
    ids, attention_mask, global_mask = _batch()
    exact, exact_grad, _ = _run(model, ids, attention_mask, global_mask, fast=False)
    runs = {}
    for fast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            runs[fast] = _run(model, ids, attention_mask, global_mask, fast=fast)

    def error(a, b):
        return float((a.detach().float() - b.detach()).norm() / b.detach().norm())

    for fast_value, slow_value, truth in [
        (runs[True][0].logits, runs[False][0].logits, exact.logits),
        (runs[True][1], runs[False][1], exact_grad),
        *[(f, s, t) for f, s, t in zip(runs[True][0].hidden_states, runs[False][0].hidden_states, exact.hidden_states)],
    ]:
        fast_error, slow_error = error(fast_value, truth), error(slow_value, truth)
        assert fast_error <= 1.5 * slow_error + 1e-6, (fast_error, slow_error)
        assert fast_error < 8 * 2**-8


def test_attribution_under_autocast_uses_fast_attention_by_default():
    model = tiny_longformer(seed=9)
    tokenizer = tiny_tokenizer("roberta")
    text = sample_text(30, seed=3)
    default = pyattn.attribute(model, tokenizer, text, n_steps=9, autocast="bfloat16")
    fast = pyattn.attribute(model, tokenizer, text, n_steps=9, autocast="bfloat16", fast_attention=True)
    slow = pyattn.attribute(model, tokenizer, text, n_steps=9, autocast="bfloat16", fast_attention=False)
    np.testing.assert_array_equal(default.scores, fast.scores)
    exact = pyattn.attribute(model, tokenizer, text, n_steps=9)
    scale = np.abs(exact.scores).max()
    assert np.abs(fast.scores - exact.scores).max() <= 1.5 * np.abs(slow.scores - exact.scores).max() + 4 * 2**-8 * scale
