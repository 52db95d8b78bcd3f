"""Single-pass explanations in banded form against a dense recomputation.

The reference re-implements Longformer's forward pass densely from first
principles (each layer's own query/key/value and *_global projections, softmax
under the band-plus-global mask, one ``(N, N)`` matrix per head), checks its
logits against the Hugging Face model, and computes every method with plain
autograd on those dense matrices: ``dp/dA`` is ``A.grad``, gradient x input
uses the embedding output's ``.grad``, and Chefer et al.'s rollout is the
matrix recursion ``R <- R + Ā R`` written out.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer

from pyattn.models.inputs import encode, position_ids_for
from pyattn.attribution.single_pass import band_gradient, single_pass, single_pass_from_inputs


def sharpened(model, factor: float = 8.0):
    """The tiny model with its matrices scaled up (initialised at std 0.02 its
    attention is near uniform and its gradients near 1e-6, too small for an
    absolute tolerance of 1e-5 to mean anything): peaked attention, gradients
    of order 1e-3 to 1e-1."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and "embeddings" not in name:
                parameter.mul_(factor)
    return model


def dense_longformer(model, input_ids, attention_mask, global_attention_mask, position_ids):
    """Logits, the embedding output and each layer's dense attention
    ``(B, H, N, N)`` (gradients retained), computed without the band."""
    B, N = input_ids.shape
    config = model.config
    H = config.num_attention_heads
    d = config.hidden_size // H
    valid = attention_mask != 0
    is_global = (global_attention_mask != 0) & valid
    embedded = model.longformer.embeddings(input_ids=input_ids, position_ids=position_ids).detach().requires_grad_(True)
    hidden = embedded
    positions = torch.arange(N)
    layers = []
    for index, layer in enumerate(model.longformer.encoder.layer):
        sa = layer.attention.self
        half = config.attention_window[index] // 2

        def heads(x):
            return x.view(B, N, H, d).transpose(1, 2)

        # Local rows: window |i - j| <= half plus every global key, valid keys only.
        scores = heads(sa.query(hidden)) @ heads(sa.key(hidden)).transpose(-1, -2) / math.sqrt(d)
        allowed = ((positions[:, None] - positions[None, :]).abs() <= half)[None] | is_global[:, None, :]
        allowed = allowed & valid[:, None, :]
        local = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
        # Global rows: every valid key, through the *_global projections.
        scores_g = heads(sa.query_global(hidden)) @ heads(sa.key_global(hidden)).transpose(-1, -2) / math.sqrt(d)
        full = scores_g.masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)
        A = torch.where(is_global[:, None, :, None], full, local)
        A = torch.where(valid[:, None, :, None], A, torch.zeros_like(A))  # padding rows attend nowhere
        A.retain_grad()
        layers.append(A)
        context = torch.where(is_global[:, None, :, None], A @ heads(sa.value_global(hidden)), A @ heads(sa.value(hidden)))
        attended = layer.attention.output(context.transpose(1, 2).reshape(B, N, H * d), hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
    return model.classifier(hidden), embedded, layers


def dense_methods(model, input_ids, attention_mask, global_attention_mask, position_ids, targets, output="probability"):
    logits, embedded, layers = dense_longformer(model, input_ids, attention_mask, global_attention_mask, position_ids)
    (logits.softmax(-1) if output == "probability" else logits).gather(1, targets[:, None]).sum().backward()
    gxi = (embedded * embedded.grad).sum(-1)
    products = [A.detach() * A.grad for A in layers]  # (B, H, N, N)
    signed = torch.stack([p.mean(1).sum(1) for p in products])
    positive = torch.stack([p.clamp(min=0).mean(1).sum(1) for p in products])
    B, N = input_ids.shape
    R = torch.eye(N, dtype=products[0].dtype).expand(B, N, N)
    for p in products:  # Chefer et al. 2021, eq. 6, first layer first
        R = R + p.clamp(min=0).mean(1) @ R
    return logits.detach(), gxi.detach(), signed, positive, R[:, 0]


def assert_matches(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Within 1e-5 absolutely, and within 1e-4 of the largest value (the
    values themselves are of order 1e-3 to 1)."""
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)
    error = float((got.double() - expected).abs().max())
    assert error <= 1e-4 * float(expected.abs().max()), f"max error {error:.3g} against values up to {float(expected.abs().max()):.3g}"


def batch_inputs(model, N=37, global_rows=((0, 3, 10), (5,)), pad_from=30, seed=1):
    generator = torch.Generator().manual_seed(seed)
    B = len(global_rows)
    input_ids = torch.randint(3, model.config.vocab_size, (B, N), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones(B, N, dtype=torch.long)
    if pad_from is not None and B > 1:
        attention_mask[1, pad_from:] = 0
        input_ids[1, pad_from:] = model.config.pad_token_id
    global_attention_mask = torch.zeros(B, N, dtype=torch.long)
    for b, rows in enumerate(global_rows):
        global_attention_mask[b, list(rows)] = 1
    return input_ids, attention_mask, global_attention_mask, position_ids_for(model, input_ids)


CASES = {
    # windows differ per layer; item 0: globals 0, 3 (inside 0's window), 10; item 1: one global and padding
    "per-layer windows, several globals, padding": dict(windows=(4, 16, 8), N=37, global_rows=((0, 3, 10), (5,)), pad_from=30),
    "one window, CLS global, N a multiple of it": dict(windows=(8, 8), N=32, global_rows=((0,),), pad_from=None),
    "no global token": dict(windows=(4, 8), N=21, global_rows=((), ()), pad_from=15),
}


@pytest.mark.parametrize("case", list(CASES))
def test_banded_equals_dense(case):
    spec = CASES[case]
    # The model as it is used (float32); the reference in float64 on a copy of
    # the same weights. (HF Longformer's own backward in float64 gives NaN for
    # padded items: its finfo(float64).min mask overflows in the float32 softmax.)
    model = sharpened(tiny_longformer(windows=spec["windows"], seed=3))
    double = sharpened(tiny_longformer(windows=spec["windows"], seed=3).double())
    input_ids, attention_mask, global_mask, position_ids = batch_inputs(model, spec["N"], spec["global_rows"], spec["pad_from"])
    targets = torch.tensor([1, 2][: input_ids.shape[0]])

    logits, gxi, signed, positive, rollout = dense_methods(double, input_ids, attention_mask, global_mask, position_ids, targets)
    with torch.no_grad():
        hf = double(input_ids=input_ids, attention_mask=attention_mask, global_attention_mask=global_mask, position_ids=position_ids).logits
    torch.testing.assert_close(logits, hf, atol=1e-6, rtol=0)  # the reference is the model

    got = single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=targets, position_ids=position_ids)
    assert got.attention_gradient.shape == (len(spec["windows"]), input_ids.shape[0], spec["N"])
    assert_matches(got.gradient_x_input, gxi)
    assert_matches(got.attention_gradient, signed)
    assert_matches(got.attention_gradient_positive, positive)
    assert_matches(got.gradient_rollout, rollout)
    # Not trivially small: the comparisons above had something to compare.
    assert gxi.abs().max() > 1e-3 and signed.abs().max() > 1e-3
    assert (rollout - (torch.arange(spec["N"]) == 0).double()).abs().max() > 1e-3
    if spec["pad_from"] is not None and input_ids.shape[0] > 1:
        assert (got.attention_gradient[:, 1, spec["pad_from"] :] == 0).all()  # padding receives no attention


def test_other_weights_and_globals():
    """Another seed, globals at the start (0, 1, 2) and apart, padding."""
    model = sharpened(tiny_longformer(windows=(4, 16, 8), seed=5))
    input_ids, attention_mask, global_mask, position_ids = batch_inputs(model, 40, ((0, 7), (0, 1, 2)), pad_from=33, seed=4)
    targets = torch.tensor([0, 1])
    double = sharpened(tiny_longformer(windows=(4, 16, 8), seed=5).double())
    _, gxi, signed, positive, rollout = dense_methods(double, input_ids, attention_mask, global_mask, position_ids, targets)
    got = single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=targets, position_ids=position_ids)
    assert_matches(got.gradient_x_input, gxi)
    assert_matches(got.attention_gradient, signed)
    assert_matches(got.attention_gradient_positive, positive)
    assert_matches(got.gradient_rollout, rollout)


def test_logit_output_equals_dense():
    """output="logit" (Chefer et al.'s code differentiates the logit)."""
    model = sharpened(tiny_longformer(windows=(4, 16, 8), seed=3))
    double = sharpened(tiny_longformer(windows=(4, 16, 8), seed=3).double())
    input_ids, attention_mask, global_mask, position_ids = batch_inputs(model, 37, ((0, 3, 10), (5,)), pad_from=30)
    targets = torch.tensor([0, 2])
    _, gxi, signed, positive, rollout = dense_methods(double, input_ids, attention_mask, global_mask, position_ids, targets, output="logit")
    got = single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=targets, output="logit", position_ids=position_ids)
    for value, expected in ((got.gradient_x_input, gxi), (got.attention_gradient, signed), (got.attention_gradient_positive, positive), (got.gradient_rollout, rollout)):
        assert_matches(value, expected)
    probability = single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=targets, position_ids=position_ids)
    assert (probability.gradient_x_input - got.gradient_x_input).abs().max() > 1e-3  # a different quantity


def test_band_gradient_against_explicit_loop():
    generator = torch.Generator().manual_seed(0)
    g = torch.randn(2, 3, 21, 5, generator=generator, dtype=torch.float64)
    v = torch.randn(2, 3, 21, 5, generator=generator, dtype=torch.float64)
    half = 4
    expected = torch.zeros(2, 3, 21, 2 * half + 1, dtype=torch.float64)
    for i in range(21):
        for k in range(2 * half + 1):
            j = i + k - half
            if 0 <= j < 21:
                expected[:, :, i, k] = (g[:, :, i] * v[:, :, j]).sum(-1)
    for block in (None, 1, 5, 8, 64):  # blocks that divide N, don't, and exceed it
        torch.testing.assert_close(band_gradient(g, v, half, block), expected)


def test_gradient_x_input_is_first_order_change():
    """An independent check of the embedding gradient: scaling the embedding
    output by (1 + eps) changes p by eps * sum(gradient x input) to first order."""
    model = sharpened(tiny_longformer(windows=(4, 8), seed=2).double())  # no padding here: float64 backward is fine
    input_ids, attention_mask, global_mask, position_ids = batch_inputs(model, 24, ((0,),), pad_from=None)
    got = single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=1, position_ids=position_ids)
    layer = model.longformer.embeddings

    def p(scale):
        handle = layer.register_forward_hook(lambda m, a, out: out * scale)
        try:
            with torch.no_grad():
                return float(model(input_ids=input_ids, attention_mask=attention_mask, global_attention_mask=global_mask, position_ids=position_ids).logits.softmax(-1)[0, 1])
        finally:
            handle.remove()

    # Central differences with Richardson extrapolation: error O(eps^4); eps
    # not smaller, because HF computes its softmax in float32 (noise ~1e-7).
    def central(eps):
        return (p(1 + eps) - p(1 - eps)) / (2 * eps)

    eps = 1e-2
    finite = (4 * central(eps / 2) - central(eps)) / 3
    assert abs(float(got.gradient_x_input.double().sum())) > 1e-3
    assert abs(finite - float(got.gradient_x_input.double().sum())) < 1e-5


def test_single_pass_on_text_lines_up_with_encode():
    model = tiny_longformer(windows=(4, 8), seed=0)
    tokenizer = tiny_tokenizer()
    text = sample_text(30, seed=2)
    sp = single_pass(model, tokenizer, text, target=2)
    document = encode(model, tokenizer, text)
    assert sp.tokens == document.tokens and sp.target == 2
    n = len(document.tokens)
    assert sp.gradient_x_input.shape == (n,) and sp.gradient_rollout.shape == (n,)
    assert sp.attention_gradient.shape == (2, n) and sp.gradient_x_input.dtype == np.float64
    assert list(sp.to_frame().columns) == ["position", "token", "gradient_x_input", "attention_gradient", "attention_gradient_positive", "gradient_rollout"]
    batch = single_pass_from_inputs(model, document.input_ids, document.attention_mask, document.global_attention_mask, target=2, position_ids=document.position_ids)
    np.testing.assert_allclose(sp.gradient_rollout, batch.gradient_rollout[0].double().numpy())
    default = single_pass(model, tokenizer, text)
    assert default.target == default.predicted_label


def dense_full_attention(model, input_ids, attention_mask, targets):
    """BERT/RoBERTa: every method from the returned dense attentions, with the
    gradient obtained by autograd.grad (not retain_grad) and the rollout as
    matrices."""
    output = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    p = output.logits.softmax(-1).gather(1, targets[:, None]).sum()
    grads = torch.autograd.grad(p, list(output.attentions))
    products = [a.detach() * g for a, g in zip(output.attentions, grads)]
    N = input_ids.shape[1]
    R = torch.eye(N, dtype=torch.float64).expand(input_ids.shape[0], N, N)
    for product in products:
        R = R + product.double().clamp(min=0).mean(1) @ R
    return torch.stack([pr.mean(1).sum(1) for pr in products]).double(), R[:, 0]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_full_attention_models(kind):
    model = sharpened(tiny_classifier(kind, seed=1))
    model.config._attn_implementation = "eager"
    tokenizer = tiny_tokenizer("bert" if kind == "bert" else "roberta")
    document = encode(model, tokenizer, sample_text(20, seed=3))
    targets = torch.tensor([1])
    got = single_pass_from_inputs(model, document.input_ids, document.attention_mask, target=targets, position_ids=document.position_ids)
    signed, rollout = dense_full_attention(model, document.input_ids, document.attention_mask, targets)
    assert signed.abs().max() > 1e-3
    assert_matches(got.attention_gradient, signed)
    assert_matches(got.gradient_rollout, rollout)


def test_leaves_the_model_alone():
    """No parameter gradient is computed or touched (a user's .grad survives),
    frozen models work, and the model's hooks are all removed."""
    model = tiny_longformer(windows=(4, 8), seed=0)
    input_ids, attention_mask, global_mask, position_ids = batch_inputs(model, 16, ((0,),), pad_from=None)
    weight = model.classifier.out_proj.weight
    weight.grad = torch.full_like(weight, 7.0)
    first = single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=1, position_ids=position_ids)
    assert (weight.grad == 7.0).all()
    assert all(p.grad is None for name, p in model.named_parameters() if "out_proj.weight" not in name)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=1, position_ids=position_ids)
    torch.testing.assert_close(frozen.gradient_rollout, first.gradient_rollout)
    torch.testing.assert_close(frozen.gradient_x_input, first.gradient_x_input)
    hooked = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not hooked


def test_bad_target_is_a_clear_error():
    model = tiny_longformer(windows=(4, 8), seed=0)
    input_ids, attention_mask, global_mask, position_ids = batch_inputs(model, 16, ((0,),), pad_from=None)
    with pytest.raises(ValueError, match="target must be a class index in 0..2"):
        single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=7, position_ids=position_ids)
    with pytest.raises(ValueError, match="target must be a class index"):
        single_pass_from_inputs(model, input_ids, attention_mask, global_mask, target=True, position_ids=position_ids)
    with pytest.raises(ValueError, match='output must be "probability" or "logit"'):
        single_pass_from_inputs(model, input_ids, attention_mask, global_mask, output="loss", position_ids=position_ids)
    with pytest.raises(ValueError, match="global_attention_mask is for Longformer"):
        single_pass_from_inputs(tiny_classifier("bert"), input_ids, attention_mask, global_mask)
