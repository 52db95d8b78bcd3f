"""Similarity metrics against independent computations (scipy, numpy written
out here) and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pyattn.compare.similarity import METRICS, compare, rank_biased_overlap, similarity, token_masks


def cos(x, y):
    return float(x @ y / math.sqrt((x @ x) * (y @ y)))


def norm01(x):
    return (x - x.min()) / (x.max() - x.min())


@pytest.mark.parametrize("seed", range(5))
def test_metrics_against_independent_computations(seed):
    rng = np.random.default_rng(seed)
    n = 200
    a = rng.normal(size=n)  # attributions: signed
    r = rng.gamma(2.0, size=n) + 0.3 * np.abs(a)  # attention: positive, related
    got = similarity(a, r, top_percent=5.0, rbo_p=0.9)
    assert tuple(got) == METRICS
    m_a, m_r = norm01(np.abs(a)), norm01(r)
    assert got["cosine_raw"] == pytest.approx(cos(a, r))
    assert got["cosine_minmax"] == pytest.approx(cos(m_a, m_r))
    for key, cut in [("median", np.median), ("mean", np.mean), ("p95", lambda v: np.percentile(v, 95))]:
        # each vector is cut at its own threshold (the original used the final layer's for all layers)
        expected = cos(np.where(m_a >= cut(m_a), m_a, 0), np.where(m_r >= cut(m_r), m_r, 0))
        assert got[f"cosine_minmax_above_{key}"] == pytest.approx(expected)
    k = math.ceil(0.05 * n)  # 10 positions
    top_a, top_r = np.argsort(-np.abs(a))[:k], np.argsort(-r)[:k]
    keep_a, keep_r = np.zeros(n), np.zeros(n)
    keep_a[top_a], keep_r[top_r] = m_a[top_a], m_r[top_r]
    assert got["cosine_minmax_top"] == pytest.approx(cos(keep_a, keep_r))
    ranks_a = np.argsort(np.argsort(np.abs(a))) + 1.0  # no ties in continuous data
    ranks_r = np.argsort(np.argsort(r)) + 1.0
    assert got["cosine_ranks"] == pytest.approx(cos(ranks_a, ranks_r))
    # top 5% of ranks are the ranks above n - k: kept, the rest zeroed (the original kept the bottom 95%)
    top_ranks_a, top_ranks_r = np.where(ranks_a > n - k, ranks_a, 0), np.where(ranks_r > n - k, ranks_r, 0)
    assert got["cosine_ranks_top"] == pytest.approx(cos(top_ranks_a, top_ranks_r))
    assert got["kendall_tau"] == pytest.approx(stats.kendalltau(np.abs(a), r).statistic)
    assert got["spearman_rho"] == pytest.approx(np.corrcoef(ranks_a, ranks_r)[0, 1])  # Pearson of ranks
    assert got["pearson_r"] == pytest.approx(np.corrcoef(np.abs(a), r)[0, 1])
    assert got["jaccard_top"] == pytest.approx(len(set(top_a) & set(top_r)) / len(set(top_a) | set(top_r)))
    assert got["rbo"] == pytest.approx(brute_force_rbo(np.abs(a), r, 0.9))


@pytest.mark.parametrize("seed", range(3))
def test_signed_attribution_against_scipy(seed):
    rng = np.random.default_rng(seed)
    a, r = rng.normal(size=120), rng.gamma(2.0, size=120)
    signed = similarity(a, r, attribution_as="signed")
    magnitude = similarity(a, r)
    assert signed["spearman_rho"] == pytest.approx(stats.spearmanr(a, r).statistic)
    assert signed["kendall_tau"] == pytest.approx(stats.kendalltau(a, r).statistic)
    assert magnitude["spearman_rho"] == pytest.approx(stats.spearmanr(np.abs(a), r).statistic)
    assert signed["cosine_raw"] == magnitude["cosine_raw"] == pytest.approx(cos(a, r))  # always signed
    with pytest.raises(ValueError, match='attribution_as must be "magnitude"'):
        similarity(a, r, attribution_as="abs")


@pytest.mark.parametrize("n", [100, 200, 300, 1100])
def test_top_sets_have_exactly_ceil_k_percent_members(n):
    from pyattn.compare.similarity import top_positions

    x = np.random.default_rng(n).random(n)
    for percent in (7, 14, 28, 29, 57, 58):
        assert len(top_positions(x, percent)) == -(-percent * n // 100)  # exact integer ceiling


def brute_force_rbo(x, y, p):
    """Webber et al. eq. 32 with the overlaps counted as set intersections."""
    order_x, order_y = list(np.argsort(-x, kind="stable")), list(np.argsort(-y, kind="stable"))
    n = len(x)
    agreement = [len(set(order_x[:d]) & set(order_y[:d])) / d for d in range(1, n + 1)]
    return agreement[-1] * p**n + (1 - p) / p * sum(agreement[d - 1] * p**d for d in range(1, n + 1))


def test_hand_worked_cases():
    x = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.7, 0.05, 0.6])
    same = similarity(x, x, top_percent=25)
    for key in ("cosine_raw", "cosine_minmax", "cosine_ranks", "kendall_tau", "spearman_rho", "pearson_r", "rbo", "jaccard_top", "cosine_ranks_top"):
        assert same[key] == pytest.approx(1.0), key
    reversed_ = similarity(x, -x + 1.0, top_percent=25)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0)
    assert reversed_["spearman_rho"] == pytest.approx(-1.0)
    assert reversed_["jaccard_top"] == 0.0  # disjoint top sets
    assert reversed_["cosine_ranks_top"] == 0.0


def test_rbo_hand_worked():
    # rankings a>b>c>d and d>c>b>a: agreements 0, 0, 2/3, 1 at depths 1..4; p = 1/2:
    # 1 * (1/2)^4 + 1 * (0 + 0 + (2/3)(1/8) + (1/16)) = 1/16 + 1/12 + 1/16
    assert rank_biased_overlap(np.array([4.0, 3, 2, 1]), np.array([1.0, 2, 3, 4]), p=0.5) == pytest.approx(1 / 16 + 1 / 12 + 1 / 16)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\)"):
        rank_biased_overlap(np.ones(3), np.ones(3), p=1.0)


def test_masks():
    tokens = ["<s>", "Ġthe", "Ġcompiler", "Ġ.", "Ġ42", "Ġtypes", "</s>"]
    masks = token_masks(tokens, special_tokens=["<s>", "</s>"])
    assert masks["no_special"].tolist() == [False, True, True, True, True, True, False]
    assert masks["alphabetic"].tolist() == [False, True, True, False, False, True, False]
    assert masks["no_stopwords"].tolist() == [False, False, True, False, False, True, False]


def test_compare_table():
    rng = np.random.default_rng(0)
    tokens = ["<s>"] + [f"Ġword{i}" if i % 3 else "Ġthe" for i in range(30)] + ["</s>"]
    tokens = [t.replace("0", "o").replace("1", "l") for t in tokens]
    a = rng.normal(size=32)
    attentions = {"final": rng.random(32), "all": rng.random(32)}
    table = compare(a, attentions, tokens, special_tokens=["<s>", "</s>"])
    assert list(table.columns[:4]) == ["attention", "mask", "tokens", "attribution_as"] and list(table.columns[4:]) == list(METRICS)
    assert set(table["attribution_as"]) == {"magnitude"}
    assert len(table) == 8 and set(table["attention"]) == {"final", "all"}
    row = table[(table.attention == "all") & (table["mask"] == "no_special")].iloc[0]
    assert row["tokens"] == 30
    assert row["kendall_tau"] == pytest.approx(stats.kendalltau(np.abs(a[1:-1]), attentions["all"][1:-1]).statistic)
    with pytest.raises(ValueError, match="has 31 tokens but attribution has 32"):
        compare(a, {"final": np.ones(31)}, tokens, special_tokens=["<s>"])
    with pytest.raises(ValueError, match="need the document's tokens"):
        compare(a, attentions, None, masks=["alphabetic"])
    # Without special tokens, a mask named "no_special" would keep them: refused, not silent.
    from pyattn.compare.similarity import MissingSpecialTokens

    for missing in (None, [], ()):
        with pytest.raises(MissingSpecialTokens, match="no special tokens were given"):
            compare(a, attentions, tokens, special_tokens=missing, masks=["no_special"])
    assert set(compare(a, attentions, tokens, masks=["all"])["mask"]) == {"all"}
    with pytest.raises(ValueError, match="NaN"):
        similarity(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_attention_choices_and_dataset_table(longformer_run):
    import pyattn
    from pyattn.compare.similarity import dataset_similarity

    out, mask = longformer_run.output, longformer_run.global_attention_mask
    plain = pyattn.layer_attention_received(out, global_attention_mask=mask)
    per_head = pyattn.layer_attention_received(out, global_attention_mask=mask, per_head=True).per_layer
    choices = pyattn.attention_views(per_head, torch_rand(3, 4), layer_ranges=[(0, 1)])
    assert list(choices) == ["final", "all", "0-1", "final, scaled", "all, scaled", "0-1, scaled"]
    np.testing.assert_allclose(choices["0-1"], (plain.per_layer[0, 0] + plain.per_layer[1, 0]).numpy(), rtol=1e-6)
    rng = np.random.default_rng(3)
    tables = [compare(rng.normal(size=37), choices, masks=["all"]) for _ in range(3)]
    per_document, means = dataset_similarity(tables, ["a", "b", "c"])
    assert len(per_document) == 18 and set(per_document["document"]) == {"a", "b", "c"}
    row = means[(means.attention == "all, scaled") & (means["mask"] == "all")].iloc[0]
    values = [t[t.attention == "all, scaled"]["kendall_tau"].iloc[0] for t in tables]
    assert row["kendall_tau_mean"] == pytest.approx(np.mean(values))
    assert row["kendall_tau_std"] == pytest.approx(np.std(values, ddof=1))
    assert row["documents"] == 3


def torch_rand(*shape):
    import torch

    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))
