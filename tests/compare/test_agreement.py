"""Head and layer agreement map: the one-matrix-product route against the
per-head metric route, the dataset-level p-value against the per-document
test and against uniformity under the null, a planted agreeing head found
after Holm, and the heat map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pyattn.compare.agreement import head_agreement, head_agreement_per_document
from pyattn.report.agreement_plots import head_agreement_figure, head_agreement_grid, head_agreement_png
from pyattn.compare.metrics import similarity_batch
from pyattn.compare.significance import ar1, null_permutations, permutation_test
from pyattn.compare.uncertainty import holm


@pytest.mark.parametrize("metric", ["spearman_rho", "pearson_r", "cosine_raw", "kendall_tau", "jaccard_top"])
def test_per_document_heads_against_similarity_batch(metric):
    rng = np.random.default_rng(0)
    n = 40
    a = rng.normal(size=n)
    attention = rng.gamma(2.0, size=(2, 3, n))
    attention[1, 2] = 1.0  # a constant head: correlations undefined
    special = np.zeros(n, bool)
    special[[0, n - 1]] = True
    observed, null = head_agreement_per_document(a, attention, metric=metric, n_perm=30, special_mask=special, seed=np.random.default_rng(9))
    assert observed.shape == (2, 3) and null.shape == (30, 2, 3)
    perms = null_permutations(n, 30, "circular_shift", special_mask=special, seed=np.random.default_rng(9))
    for layer in range(2):
        for head in range(3):
            row = attention[layer, head]
            expected_null = similarity_batch(a, row[perms], metrics=[metric])[metric]
            expected = similarity_batch(a, row[None], metrics=[metric])[metric][0]
            assert np.allclose(null[:, layer, head], expected_null, atol=1e-12, equal_nan=True)
            assert observed[layer, head] == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_one_document_one_head_matches_the_per_document_test():
    rng = np.random.default_rng(1)
    a = rng.normal(size=50)
    r = np.abs(a) * 0.2 + rng.gamma(2.0, size=50)
    table = head_agreement([(a, r[None, None, :])], n_perm=39, seed=4)
    single = permutation_test(a, r, n_perm=39, seed=4, metrics=["spearman_rho"]).iloc[0]
    assert table["mean"].iloc[0] == pytest.approx(single["observed"])
    assert table["p_value"].iloc[0] == pytest.approx(single["p_value"])
    assert table["share_documents_p05"].iloc[0] == float(single["p_value"] <= 0.05)


@pytest.mark.slow
def test_dataset_p_values_uniform_under_the_null():
    # 1,000 simulated datasets of 4 documents (AR(1) attribution and attention, independent):
    # the dataset-level p-value of the mean Spearman is uniform
    rng = np.random.default_rng(2)
    p = []
    for s in range(1000):
        documents = [(ar1(48, 0.7, rng), np.exp(ar1(48, 0.7, rng))[None, None, :]) for _ in range(4)]
        p.append(head_agreement(documents, n_perm=39, n_boot=10, seed=s)["p_value"].iloc[0])
    p = np.array(p)
    # p is (under the null) uniform on {1, ..., 40} / 40: spread each over its step before KS
    assert stats.kstest(p - rng.uniform(size=1000) / 40, "uniform").pvalue > 0.01
    assert np.mean(p <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000)


def test_planted_agreeing_head_is_found_after_holm():
    rng = np.random.default_rng(3)
    layers, heads, documents = 3, 4, 12
    data = []
    for _ in range(documents):
        n = int(rng.integers(60, 120))
        a = ar1(n, 0.6, rng)
        attention = np.exp(np.stack([[ar1(n, 0.6, rng) * 0.8 for _ in range(heads)] for _ in range(layers)]))
        attention[2, 1] = np.exp(0.6 * np.abs(a) + 0.5 * ar1(n, 0.6, rng))  # layer 2, head 1 agrees
        data.append((a, attention))
    with pytest.warns(UserWarning, match="n_perm=199 cannot give a Holm-adjusted p-value below 12/200"):
        head_agreement(data, n_perm=199, seed=0)
    table = head_agreement(data, seed=0)  # default n_perm: 2 x 12 heads / 0.05 - 1 = 479 -> 999
    assert list(table.columns) == ["layer", "head", "metric", "mean", "ci_low", "ci_high", "documents", "p_value", "p_holm", "significant", "share_documents_p05", "n_perm", "null", "attribution_as"]
    assert list(zip(table["layer"], table["head"])) == [(l, h) for l in range(layers) for h in range(heads)]
    assert np.allclose(table["p_holm"], holm(table["p_value"]))
    planted = table[(table["layer"] == 2) & (table["head"] == 1)].iloc[0]
    assert planted["significant"] and planted["ci_low"] > 0.2 and planted["p_value"] == pytest.approx(1 / 1000)
    others = table.drop(planted.name)
    assert not others["significant"].any()
    assert np.all(others["ci_low"] < others["mean"]) and np.all(others["mean"] < others["ci_high"])
    per_document = [stats.spearmanr(np.abs(a), att[0, 0]).statistic for a, att in data]
    assert table["mean"].iloc[0] == pytest.approx(np.mean(per_document))


def test_head_agreement_bad_input_is_named():
    a = np.zeros(5)
    with pytest.raises(ValueError, match="documents is empty"):
        head_agreement([])
    with pytest.raises(ValueError, match=r"document 0: attention must have shape \(layers, heads, 5\)"):
        head_agreement([(a, np.zeros((2, 5)))])
    with pytest.raises(ValueError, match="document 1: attention has 1 layers x 2 heads, document 0 had 2 x 2"):
        head_agreement([(a, np.ones((2, 2, 5))), (a, np.ones((1, 2, 5)))])
    with pytest.raises(ValueError, match="got 1 special_masks for 2 documents"):
        head_agreement([(a, np.ones((2, 2, 5))), (a, np.ones((2, 2, 5)))], special_masks=[np.zeros(5, bool)])


def test_heat_map_beside_head_importance():
    rng = np.random.default_rng(5)
    data = [(rng.normal(size=30), rng.gamma(2.0, size=(3, 2, 30))) for _ in range(4)]
    table = head_agreement(data, n_perm=239, n_boot=50)
    grid = head_agreement_grid(table)
    assert grid.shape == (3, 2)
    assert np.allclose(grid, table.pivot(index="layer", columns="head", values="mean").to_numpy())
    importance = rng.random((3, 2))
    fig = head_agreement_figure(table, head_importance=importance)
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 2
    assert np.allclose(images[0].get_array(), grid) and np.allclose(images[1].get_array(), importance)
    assert "do the important heads agree" in fig._suptitle.get_text()
    alone = head_agreement_figure(table)
    assert len([ax for ax in alone.axes if ax.get_images()]) == 1
    assert head_agreement_png(table, head_importance=importance).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match=r"head_importance must have shape \(3, 2\)"):
        head_agreement_figure(table, head_importance=np.ones((2, 3)))
    import matplotlib.pyplot as plt

    plt.close("all")


def test_heat_map_marks_significant_heads():
    rng = np.random.default_rng(6)
    data = []
    for _ in range(8):
        a = rng.normal(size=80)
        attention = rng.gamma(2.0, size=(2, 2, 80))
        attention[0, 1] = np.abs(a) + 0.1 * rng.gamma(2.0, size=80)
        data.append((a, attention))
    table = head_agreement(data, n_perm=199, n_boot=100)
    fig = head_agreement_figure(table)
    marks = fig.axes[0].collections[0].get_offsets()
    assert [tuple(m) for m in np.asarray(marks)] == [(1.0, 0.0)]  # (head, layer) of the significant cell
    import matplotlib.pyplot as plt

    plt.close("all")
