"""Bootstrap intervals over documents (coverage of a known mean, agreement
with normal theory and with the point estimates of pyattn.compare.similarity and
pyattn.compare.tokens) and Holm's correction against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pyattn.compare.similarity import compare, dataset_similarity
from pyattn.compare.tokens import dataset_token_table
from pyattn.compare.uncertainty import bootstrap_mean_ci, bootstrap_means, bootstrap_token_means, bootstrap_weights, holm


# ---------------------------------------------------------------- Holm


@pytest.mark.parametrize(
    "p, adjusted",
    [
        # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, 1 x 0.04 -> running max 0.03, 0.06, 0.06
        ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),
        # m = 4: 0.004, 0.03, 0.04, 0.5 (the step-down rejects the first three at 0.05)
        ([0.001, 0.01, 0.02, 0.5], [0.004, 0.03, 0.04, 0.5]),
        # capped at 1, then the running max: 2 x 0.4 = 0.8 > 0.6
        ([0.4, 0.6], [0.8, 0.8]),
        # 0.05, 4 x 0.02 = 0.08, 3 x 0.03 = 0.09, then 2 x 0.04 = 0.08 and 0.05 lifted to 0.09
        ([0.01, 0.02, 0.03, 0.04, 0.05], [0.05, 0.08, 0.09, 0.09, 0.09]),
        # ties
        ([0.01, 0.01], [0.02, 0.02]),
        # NaN (an untested head) stays NaN and does not count in m = 2
        ([0.02, np.nan, 0.04], [0.04, np.nan, 0.04]),
        ([np.nan], [np.nan]),
    ],
)
def test_holm_hand_worked(p, adjusted):
    assert np.allclose(holm(p), adjusted, equal_nan=True, atol=1e-15)


def test_holm_keeps_shape_and_matches_the_step_down_procedure():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=(3, 4)) ** rng.uniform(0.5, 2)
        # Holm's procedure as stated: walk the sorted p-values, reject while p_(i) <= alpha / (m - i + 1)
        alpha, flat = 0.05, p.ravel()
        rejected = np.zeros(flat.size, bool)
        for i, index in enumerate(np.argsort(flat)):
            if flat[index] > alpha / (flat.size - i):
                break
            rejected[index] = True
        adjusted = holm(p)
        assert adjusted.shape == (3, 4)
        assert np.array_equal(adjusted.ravel() <= alpha, rejected)
        assert np.all(adjusted >= p)


def test_holm_controls_family_wise_error():
    rng = np.random.default_rng(1)
    any_rejected = np.mean([np.any(holm(rng.uniform(size=20)) <= 0.05) for _ in range(2000)])
    assert any_rejected <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000)


def test_holm_refuses_values_outside_0_1():
    with pytest.raises(ValueError, match=r"p_values must lie in \[0, 1\]"):
        holm([0.2, 1.5])


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_weights_resample_documents():
    w = bootstrap_weights(7, 500, seed=0)
    assert w.shape == (500, 7)
    assert np.all(w.sum(axis=1) == 7)
    assert np.allclose(w.mean(axis=0), 1.0, atol=0.15)  # each document drawn once per resample on average


# skewed values need more documents (the interval does not correct for skew: beta(2, 6) over 30 documents
# covers about 93%, see benchmarks/results/significance.md)
@pytest.mark.slow
@pytest.mark.parametrize("documents, draw, mean", [(50, "normal", 0.2), (100, "beta", 0.25)])
def test_bootstrap_interval_covers_a_known_mean(documents, draw, mean):
    rng = np.random.default_rng(documents)
    simulations = 1000
    covered = 0
    for s in range(simulations):
        values = rng.normal(0.2, 0.3, documents) if draw == "normal" else rng.beta(2, 6, documents)
        _, low, high = bootstrap_mean_ci(values, n_boot=1000, seed=s)
        covered += low <= mean <= high
    assert 0.93 <= covered / simulations <= 0.97


def test_bootstrap_interval_near_normal_theory_for_many_documents():
    rng = np.random.default_rng(2)
    values = rng.normal(0.1, 0.2, size=400)
    mean, low, high = bootstrap_mean_ci(values, n_boot=4000, seed=0)
    half = stats.t.ppf(0.975, 399) * values.std(ddof=1) / np.sqrt(400)
    assert mean == pytest.approx(values.mean())
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert low < mean < high


def test_bootstrap_mean_ci_edge_cases():
    assert bootstrap_mean_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))
    assert np.isnan(bootstrap_mean_ci([np.nan, np.nan])).all()
    mean, low, high = bootstrap_mean_ci([0.1, np.nan, 0.3, 0.2])  # NaN documents dropped
    assert mean == pytest.approx(0.2) and low <= 0.2 <= high
    with pytest.raises(ValueError, match="confidence must be in"):
        bootstrap_mean_ci([0.1, 0.2], confidence=95)
    with pytest.raises(ValueError, match="method must be one of"):
        bootstrap_mean_ci([0.1, 0.2], method="bca")
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        bootstrap_mean_ci([0.1, 0.2], n_boot=0)


def _per_document_table(documents: int = 40):
    rng = np.random.default_rng(3)
    tables = []
    for _ in range(documents):
        a = rng.normal(size=60)
        tables.append(compare(a, {"final": np.abs(a) + rng.gamma(2.0, size=60), "all": rng.gamma(2.0, size=60)}, masks=("all",)))
    return dataset_similarity(tables)


def test_bootstrap_means_of_a_metrics_table():
    per_document, means = _per_document_table()
    table = bootstrap_means(per_document, metrics=["spearman_rho", "jaccard_top"], n_boot=2000)
    assert list(table.columns) == ["attention", "mask", "metric", "mean", "ci_low", "ci_high", "documents", "confidence", "n_boot", "method"]
    assert len(table) == 2 * 2  # attention choices x metrics
    for _, row in table.iterrows():
        expected = means.set_index(["attention", "mask"]).loc[(row["attention"], row["mask"]), f"{row['metric']}_mean"]
        assert row["mean"] == pytest.approx(expected)  # the means table's own (pandas) mean
        values = per_document[(per_document["attention"] == row["attention"])][row["metric"]]
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        assert (row["ci_high"] - row["ci_low"]) / 2 == pytest.approx(half, rel=0.2)
        assert row["ci_low"] < row["mean"] < row["ci_high"]
        assert row["documents"] == 40
    final = table[(table["attention"] == "final") & (table["metric"] == "spearman_rho")].iloc[0]
    unrelated = table[(table["attention"] == "all") & (table["metric"] == "spearman_rho")].iloc[0]
    assert final["ci_low"] > 0.3 and unrelated["ci_low"] < 0 < unrelated["ci_high"]


def test_bootstrap_means_skips_documents_without_a_value():
    per_document = pd.DataFrame(
        {"document": [0, 1, 2, 3], "attention": "final", "mask": "all", "spearman_rho": [0.1, np.nan, 0.3, 0.2]}
    )
    row = bootstrap_means(per_document).iloc[0]
    assert row["documents"] == 3 and row["mean"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="document ids repeat"):
        bootstrap_means(pd.concat([per_document, per_document]))
    with pytest.raises(ValueError, match="no 'document' column"):
        bootstrap_means(per_document.drop(columns="document"))


def test_bootstrap_token_means_against_the_token_table():
    rng = np.random.default_rng(4)
    vocabulary = ["Ġthe", "Ġcompiler", "compiler", "Ġbug", "<s>"]
    documents = []
    for _ in range(30):
        tokens = list(rng.choice(vocabulary, size=25))
        documents.append((tokens, rng.normal(size=25)))
    for merge in (False, True):
        table = bootstrap_token_means(documents, merge_forms=merge, n_boot=1000)
        reference = dataset_token_table(documents, merge_forms=merge).set_index("token" if merge else "raw_token")
        got = table.set_index("token")
        assert set(got.index) == set(reference.index)
        for column in ("documents", "occurrences", "sum", "mean_over_all_documents", "mean_per_occurrence"):
            assert np.allclose(got[column], reference.loc[got.index, column])
        for column in ("mean_over_all_documents", "mean_per_occurrence"):
            assert np.all(got[f"{column}_low"] <= got[column]) and np.all(got[column] <= got[f"{column}_high"])
    # mean over all documents = the mean over documents of each document's total for the type:
    # the same resamples give the same interval as bootstrap_mean_ci on those totals
    totals = np.array([scores[np.array(tokens) == "Ġbug"].sum() for tokens, scores in documents])
    _, low, high = bootstrap_mean_ci(totals, n_boot=1000, seed=0)
    row = bootstrap_token_means(documents, n_boot=1000, seed=0).set_index("token").loc["Ġbug"]
    assert (row["mean_over_all_documents_low"], row["mean_over_all_documents_high"]) == pytest.approx((low, high))
    only = bootstrap_token_means(documents, tokens=["Ġbug"], n_boot=100)
    assert list(only["token"]) == ["Ġbug"]
