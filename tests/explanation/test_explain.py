"""pyattn.explanation: the per-document object, checked against independent
recomputations (the pure-PyTorch dense reference, dense rollout, scipy)."""

from __future__ import annotations

import html

import numpy as np
import pytest
import torch
from scipy import stats

import pyattn
from pyattn.kernels import reference
from pyattn.model_attention.rollout import dense_rollout
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer


@pytest.fixture(scope="module")
def longformer_explanation():
    model, tokenizer = tiny_longformer(seed=7), tiny_tokenizer("roberta")
    text = sample_text(40, seed=3)
    importance = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    result = pyattn.explain(model, tokenizer, text, head_importance=importance, layer_ranges=["0-1"], n_steps=16, random_rankings=1)
    return model, tokenizer, text, importance, result


def test_views_equal_the_dense_reference(longformer_explanation):
    model, tokenizer, text, importance, result = longformer_explanation
    collected = pyattn.attention(model, tokenizer, text)
    dense = [
        reference.band_to_dense(band, glob, collected.global_attention_mask)[0]  # (H, N, N), float64
        for band, glob in zip(collected.attentions, collected.global_attentions)
    ]
    per_layer_head = torch.stack([d.sum(1) for d in dense])  # (L, H, N): column sums
    np.testing.assert_allclose(result.attention["final"], per_layer_head[-1].sum(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(result.attention["all"], per_layer_head.sum((0, 1)).numpy(), atol=1e-5)
    np.testing.assert_allclose(result.attention["0-1"], per_layer_head[:2].sum((0, 1)).numpy(), atol=1e-5)
    scaled = (per_layer_head * importance.double()[:, :, None]).sum(1)
    np.testing.assert_allclose(result.attention["all, scaled"], scaled.sum(0).numpy(), atol=1e-5)
    rollout = dense_rollout([d[None] for d in dense])[0]
    np.testing.assert_allclose(result.attention["rollout"], rollout.numpy(), atol=1e-5)
    # every real row of attention sums to 1, so all heads of a layer receive N x H in total
    n = len(result.tokens)
    assert result.attention["final"].sum() == pytest.approx(n * 4, rel=1e-5)


def test_tables_and_tokens(longformer_explanation):
    _, tokenizer, _, _, result = longformer_explanation
    scores = result.attribution.scores
    table = result.similarity
    assert set(table["mask"]) == {"all", "no_special", "alphabetic", "no_stopwords"}
    assert set(table["attribution_as"]) == {"magnitude"}
    row = table[(table.attention == "all") & (table["mask"] == "no_special")].iloc[0]
    keep = np.array([t not in tokenizer.all_special_tokens for t in result.tokens])
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(np.abs(scores[keep]), result.attention["all"][keep]).statistic)
    supporting, opposing = result.supporting(5), result.opposing(5)
    assert (supporting["score"] > 0).all() and supporting["score"].is_monotonic_decreasing
    assert (opposing["score"] < 0).all() and opposing["score"].is_monotonic_increasing
    assert supporting["score"].iloc[0] == scores.max()
    frame = result.to_frame()
    assert len(frame) == len(result.tokens) and frame["attribution"].tolist() == scores.tolist()
    assert frame["special"].tolist() == (~keep).tolist()
    assert {f"attention: {v}" for v in result.attention} <= set(frame.columns)
    assert set(result.faithfulness["ranking"]) == {"attribution", "attention (all)", "rollout", "random"}
    # completeness holds for what the object reports
    assert scores.sum() == pytest.approx(result.attribution.output_gap + result.attribution.delta, abs=1e-9)


def test_renders_escaped_html(tmp_path, longformer_explanation):
    _, _, _, _, result = longformer_explanation
    inline = result._repr_html_()
    # the notebook view: a compact fragment (prediction, headline numbers, both colour bars, the aligned tokens), no plots
    assert "<html" not in inline and "data:image/png" not in inline and "supporting the prediction" not in inline
    assert "Spearman / Kendall (all layers)" in inline and inline.count('class="cbar"') == 2
    assert inline.count('<mark class="attention"') == len(result.tokens)
    full = result.report()  # the full report, a call away
    assert "supporting the prediction" in full._repr_html_() and "opposing the prediction" in full.html
    page = result.save_html(tmp_path / "doc.html")
    text = open(page, encoding="utf-8").read()
    assert text.count("data:image/png;base64,") >= 3
    assert html.escape(result.tokens[1].replace("Ġ", "")) in text
    assert "Explanation(" in repr(result)


def test_full_attention_model_with_padding_free_rollout():
    model = tiny_classifier("bert", seed=2)
    model.config._attn_implementation = "eager"
    tokenizer = tiny_tokenizer("bert")
    text = sample_text(18, seed=1)
    result = pyattn.explain(model, tokenizer, text, n_steps=8, faithfulness=False)  # the q/k route
    collected = pyattn.attention(model, tokenizer, text, route="eager")  # the model's own probabilities
    dense = [a[0].double() for a in collected.attentions]  # (H, N, N)
    np.testing.assert_allclose(result.attention["all"], sum(d.sum((0, 1)) for d in dense).numpy(), atol=1e-5)
    np.testing.assert_allclose(result.attention["rollout"], dense_rollout([d[None] for d in dense])[0].numpy(), atol=1e-5)
    assert result.faithfulness is None


def test_bad_arguments_are_named():
    model, tokenizer = tiny_longformer(seed=7), tiny_tokenizer("roberta")
    text = sample_text(12, seed=3)
    with pytest.raises(ValueError, match=r"head_importance must have shape \(L, H\) = \(3, 4\)"):
        pyattn.explain(model, tokenizer, text, head_importance=torch.ones(2, 4), n_steps=2, faithfulness=False)
    with pytest.raises(ValueError, match="finite and non-negative"):
        pyattn.explain(model, tokenizer, text, head_importance=-torch.ones(3, 4), n_steps=2, faithfulness=False)
    with pytest.raises(ValueError, match=r"unknown masks \['nope'\]"):
        pyattn.explain(model, tokenizer, text, masks=["nope"], n_steps=2, faithfulness=False)
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        pyattn.explain(model, tokenizer, text, layer_ranges=["0-7"], n_steps=2, faithfulness=False)


def test_significance_of_every_view_and_metric():
    from pyattn.compare.similarity import METRICS

    model, tokenizer = tiny_longformer(seed=7), tiny_tokenizer("roberta")
    result = pyattn.explain(model, tokenizer, sample_text(30, seed=5), n_steps=4, faithfulness=False, significance=49)
    table = result.significance
    assert len(table) == len(result.attention) * len(METRICS) and set(table["mask"]) == {"no_special"}
    assert table["p_value"].between(1 / 50, 1).all()
    assert "Permutation p-values" in result.report().html  # in the full report (the inline view is compact)
    # the observed values are the similarity table's (mask no_special), computed by an independent route
    similarity = result.similarity[result.similarity["mask"] == "no_special"].set_index("attention")
    for row in table.itertuples():
        expected = similarity.loc[row.attention, row.metric]
        assert row.observed == pytest.approx(expected, abs=1e-9) or (np.isnan(expected) and np.isnan(row.observed))
    with pytest.raises(ValueError, match="significance must be a number of permutations"):
        pyattn.explain(model, tokenizer, "a b c", significance=-1)
