"""Head importance: Taylor (T3-Vis) against a written-out recomputation,
head-gate gradients against finite differences, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyattn.attribution.importance import head_gate_importance, load_head_importance, save_head_importance, taylor_importance
from pyattn.models.inputs import encode
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer


@pytest.fixture(scope="module")
def setup():
    model = tiny_longformer(seed=21)
    tokenizer = tiny_tokenizer("roberta")
    texts = [sample_text(15 + 3 * i, seed=i) for i in range(3)]
    labels = [0, 2, 1]
    return model, tokenizer, texts, labels


def written_out_taylor(model, tokenizer, texts, labels, names):
    """Per document, per layer, per head: slice the head's rows (q, k, v
    weights and biases) and columns (output dense) and add (grad * param)^2."""
    heads = model.config.num_attention_heads
    d = model.config.hidden_size // heads
    total = np.zeros((model.config.num_hidden_layers, heads))
    for text, label in zip(texts, labels):
        document = encode(model, tokenizer, text)
        model.zero_grad()
        logits = model(**document.forward_kwargs()).logits
        torch.nn.functional.cross_entropy(logits, torch.tensor([label])).backward()
        for l, layer in enumerate(model.longformer.encoder.layer):
            for h in range(heads):
                rows = slice(h * d, (h + 1) * d)
                for name in names:
                    linear = getattr(layer.attention.self, name)
                    total[l, h] += float(((linear.weight.grad[rows] * linear.weight.detach()[rows]) ** 2).sum())
                    total[l, h] += float(((linear.bias.grad[rows] * linear.bias.detach()[rows]) ** 2).sum())
                dense = layer.attention.output.dense
                total[l, h] += float(((dense.weight.grad[:, rows] * dense.weight.detach()[:, rows]) ** 2).sum())
    model.zero_grad()
    return (total - total.min()) / (total.max() - total.min())


def test_taylor_matches_written_out_recomputation(setup):
    model, tokenizer, texts, labels = setup
    got = taylor_importance(model, tokenizer, texts, labels, progress=False)
    expected = written_out_taylor(model, tokenizer, texts, labels, ["query", "key", "value"])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (3, 4) and float(got.min()) == 0.0 and float(got.max()) == 1.0


def test_taylor_with_global_projections(setup):
    model, tokenizer, texts, labels = setup
    got = taylor_importance(model, tokenizer, texts, labels, include_global=True, progress=False)
    expected = written_out_taylor(model, tokenizer, texts, labels, ["query", "key", "value", "query_global", "key_global", "value_global"])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    bert = tiny_classifier("bert")
    with pytest.raises(ValueError, match="include_global=True needs Longformer"):
        taylor_importance(bert, tiny_tokenizer("bert"), texts[:1], [0], include_global=True, progress=False)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_head_gate_gradient_matches_finite_differences(attn_implementation):
    """Scaling head h's columns of the output projection by (1 +- e) scales its
    output exactly as a gate would: a central difference of the loss gives
    dL/dg_h by a route that uses no hooks. (A BERT in float64: Longformer
    computes its softmax in float32, too coarse for finite differences.)"""
    model = tiny_classifier("bert", seed=5).double()
    model.config._attn_implementation = attn_implementation
    tokenizer = tiny_tokenizer("bert")
    text, label = sample_text(30, seed=9), 1
    got = head_gate_importance(model, tokenizer, [text], [label], normalise_layers=False, progress=False)
    document = encode(model, tokenizer, text)
    heads, d, eps = 4, model.config.hidden_size // 4, 1e-6

    def loss():
        with torch.no_grad():
            logits = model(**document.forward_kwargs()).logits
            return float(torch.nn.functional.cross_entropy(logits, torch.tensor([label])))

    expected = np.zeros((2, heads))
    for l, layer in enumerate(model.bert.encoder.layer):
        weight = layer.attention.output.dense.weight
        for h in range(heads):
            original = weight.data[:, h * d : (h + 1) * d].clone()
            weight.data[:, h * d : (h + 1) * d] = original * (1 + eps)
            up = loss()
            weight.data[:, h * d : (h + 1) * d] = original * (1 - eps)
            down = loss()
            weight.data[:, h * d : (h + 1) * d] = original
            expected[l, h] = abs((up - down) / (2 * eps))
    assert expected.max() > 1e-5  # not all zero: the gates matter
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-8)


def test_head_gate_layers_are_l2_normalised(setup):
    model, tokenizer, texts, labels = setup
    got = head_gate_importance(model, tokenizer, texts, labels, progress=False)
    np.testing.assert_allclose(got.norm(dim=1).numpy(), np.ones(3), rtol=1e-5)


def test_save_and_load(setup, tmp_path):
    model = setup[0]
    importance = torch.rand(3, 4)
    for name in ("importance.pt", "importance.npy"):
        save_head_importance(importance, tmp_path / name)
        torch.testing.assert_close(load_head_importance(tmp_path / name, model), importance)
    # As the original notebooks stored it: torch.save of a bare (L, H) tensor from elsewhere.
    torch.save(torch.rand(12, 12).double(), tmp_path / "head_importance.pt")
    assert load_head_importance(tmp_path / "head_importance.pt").shape == (12, 12)
    with pytest.raises(ValueError, match=r"shape \(12, 12\) but the model has 3 layers x 4 heads"):
        load_head_importance(tmp_path / "head_importance.pt", model)
    # weights_only: a pickled object is refused, not executed
    torch.save({"importance": object()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_head_importance(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_head_importance(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="use .pt or .npy"):
        save_head_importance(importance, tmp_path / "importance.csv")


@pytest.mark.parametrize(
    ("importance", "message"),
    [
        (torch.tensor([[0.5, -1.0]]), r"must be >= 0, got a minimum of -1"),
        (torch.tensor([[0.5, float("nan")]]), r"1 non-finite value"),
        (torch.tensor([[float("inf"), 1.0], [float("-inf"), 2.0]]), r"2 non-finite value"),
        (torch.zeros(0, 4), r"L, H >= 1"),
    ],
)
def test_save_refuses_what_load_would_refuse(importance, message, tmp_path):
    # what cannot be loaded back must not be written: the loader refuses these (checked here too)
    for name in ("importance.pt", "importance.npy"):
        path = tmp_path / name
        with pytest.raises(ValueError, match=message):
            save_head_importance(importance, path)
        assert not path.exists()
        if importance.numel():
            torch.save(importance, tmp_path / "direct.pt")
            with pytest.raises(ValueError, match="non-finite|negative"):
                load_head_importance(tmp_path / "direct.pt")
