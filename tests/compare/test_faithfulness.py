"""Faithfulness: comprehensiveness and sufficiency against a written-out
recomputation; on the demo model, attributions beat a random ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pyattn
from pyattn.compare.faithfulness import faithfulness
from pyattn.models.inputs import encode
from testing import sample_text, tiny_longformer, tiny_tokenizer


def test_against_written_out_removal():
    model, tokenizer = tiny_longformer(seed=31), tiny_tokenizer("roberta")
    text = sample_text(19, seed=4)
    document = encode(model, tokenizer, text)
    n = document.input_ids.shape[1]
    scores = np.random.default_rng(0).random(n)
    per_k, aopc = faithfulness(model, tokenizer, text, {"mine": scores}, target=1, percents=(10, 50), random_rankings=0)

    def p(ids):
        ids = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids=ids, global_attention_mask=torch.tensor([[1] + [0] * (ids.shape[1] - 1)])).logits
        return float(logits.softmax(-1)[0, 1])

    ids = document.input_ids[0].tolist()
    full = p(ids)
    expected = {}
    for percent in (10, 50):
        k = math.ceil(percent / 100 * 19)
        top = set((np.argsort(-scores[1:-1], kind="stable")[:k] + 1).tolist())  # text positions
        without = [ids[0]] + [t for i, t in enumerate(ids) if 0 < i < n - 1 and i not in top] + [ids[-1]]
        only = [ids[0]] + [t for i, t in enumerate(ids) if i in top] + [ids[-1]]
        expected[percent] = (full - p(without), full - p(only), k)
    for _, row in per_k.iterrows():
        comp, suff, k = expected[row["percent"]]
        assert row["removed"] == k
        assert row["comprehensiveness"] == pytest.approx(comp, abs=1e-6)
        assert row["sufficiency"] == pytest.approx(suff, abs=1e-6)
    assert aopc.iloc[0]["comprehensiveness_aopc"] == pytest.approx(np.mean([expected[10][0], expected[50][0]]), abs=1e-6)
    assert aopc.iloc[0]["probability"] == pytest.approx(full, abs=1e-6)


def test_mask_mode_and_errors():
    model, tokenizer = tiny_longformer(seed=31), tiny_tokenizer("roberta")
    text = sample_text(12, seed=1)
    per_k, aopc = faithfulness(model, tokenizer, text, {"flat": np.ones(14)}, mode="mask", percents=(50,), random_rankings=2)
    assert set(aopc["ranking"]) == {"flat", "random"}
    with pytest.raises(ValueError, match="has shape \\(5,\\) but the document has 14 tokens"):
        faithfulness(model, tokenizer, text, {"short": np.ones(5)})
    with pytest.raises(ValueError, match='mode must be "delete" or "mask"'):
        faithfulness(model, tokenizer, text, {}, mode="drop")


def test_attribution_beats_random_on_the_demo_model():
    model, tokenizer = pyattn.load_demo()
    documents = [d for d in pyattn.demo_documents("test", n=40) if len(d.text.split()) < 500][:4]
    gains = []
    for document in documents:
        scores = pyattn.attribute(model, tokenizer, document.text)
        _, aopc = faithfulness(model, tokenizer, document.text, {"attribution": scores.scores}, target=scores.target)
        table = aopc.set_index("ranking")
        gains.append(table.loc["attribution", "comprehensiveness_aopc"] - table.loc["random", "comprehensiveness_aopc"])
    assert np.mean(gains) > 0.05, gains


def test_ranking_convention_is_named_and_magnitude_ranks_by_absolute_value():
    model, tokenizer = tiny_longformer(seed=31), tiny_tokenizer("roberta")
    text = sample_text(15, seed=6)
    n = encode(model, tokenizer, text).input_ids.shape[1]
    scores = np.random.default_rng(1).normal(size=n)  # signed, like attributions
    kwargs = dict(target=1, percents=(10, 50), random_rankings=0)
    _, by_magnitude = faithfulness(model, tokenizer, text, {"a": scores}, by="magnitude", **kwargs)
    _, of_absolute = faithfulness(model, tokenizer, text, {"a": np.abs(scores)}, by="signed", **kwargs)
    _, signed = faithfulness(model, tokenizer, text, {"a": scores}, **kwargs)
    assert by_magnitude["comprehensiveness_aopc"].tolist() == pytest.approx(of_absolute["comprehensiveness_aopc"].tolist())
    assert set(by_magnitude["by"]) == {"magnitude"} and set(signed["by"]) == {"signed"}
    assert signed["comprehensiveness_aopc"].iloc[0] != pytest.approx(by_magnitude["comprehensiveness_aopc"].iloc[0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        faithfulness(model, tokenizer, text, {"a": np.full(n, np.nan)}, **kwargs)
    with pytest.raises(ValueError, match='by must be "signed" or "magnitude"'):
        faithfulness(model, tokenizer, text, {"a": scores}, by="abs", **kwargs)
