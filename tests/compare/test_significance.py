"""Per-document permutation tests: the vectorised metrics against
pyattn.compare.similarity.similarity (itself checked against scipy), the null
permutations' invariants, and the p-value formula on cases enumerated by
hand. Calibration (uniform p-values under the null) is in test_calibration.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pyattn.compare.significance import (
    NULLS,
    document_significance,
    null_permutations,
    permutation_p_value,
    permutation_test,
)
from pyattn.compare.metrics import similarity_batch
from pyattn.compare.similarity import METRICS, similarity


def test_batch_covers_every_metric_of_similarity():
    rng = np.random.default_rng(0)
    got = similarity_batch(rng.normal(size=10), rng.gamma(2.0, size=(3, 10)))
    assert tuple(got) == METRICS  # a renamed or added metric in similarity.py must be added here


@pytest.mark.parametrize("n", [2, 3, 7, 40, 129])
@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_batch_equals_similarity_row_by_row(n, kind):
    rng = np.random.default_rng(n)
    if kind == "continuous":
        a, rows = rng.normal(size=n), rng.gamma(2.0, size=(12, n))
    else:  # many ties in both vectors, signed attributions whose magnitudes tie too
        a, rows = rng.integers(-3, 4, size=n).astype(float), rng.integers(0, 4, size=(12, n)).astype(float)
        rows[0] = 1.0  # a constant attention vector: correlations undefined (NaN)
    got = similarity_batch(a, rows, top_percent=10.0, rbo_p=0.8)
    for j, row in enumerate(rows):
        expected = similarity(a, row, top_percent=10.0, rbo_p=0.8)
        for metric in METRICS:
            assert got[metric][j] == pytest.approx(expected[metric], abs=1e-10, nan_ok=True), (metric, j)


def test_batch_kendall_long_vectors_take_the_per_row_route():
    # above ~350 tokens Kendall's tau-b runs per row through scipy: same numbers
    rng = np.random.default_rng(1)
    a, rows = rng.normal(size=400), rng.integers(0, 50, size=(3, 400)).astype(float)
    got = similarity_batch(a, rows, metrics=["kendall_tau", "rbo"])
    for j, row in enumerate(rows):
        expected = similarity(a, row)
        assert got["kendall_tau"][j] == pytest.approx(expected["kendall_tau"], abs=1e-12)
        assert got["rbo"][j] == pytest.approx(expected["rbo"], abs=1e-12)


@pytest.mark.parametrize("null", NULLS)
def test_null_permutations_are_permutations_holding_special_tokens(null):
    n = 23
    special = np.zeros(n, bool)
    special[[0, 11, 22]] = True
    perms = null_permutations(n, 300, null, block_size=4, special_mask=special, seed=5)
    assert perms.shape[1] == n
    assert np.all(np.sort(perms, axis=1) == np.arange(n))
    assert np.all(perms[:, special] == np.flatnonzero(special))
    movable = np.flatnonzero(~special)
    moved = perms[:, movable]  # which movable position lands in each movable slot
    slot = np.searchsorted(movable, moved)  # as indices 0..m-1 among movable positions
    m = len(movable)
    if null == "circular_shift":
        # 20 rotations, fewer than 300 draws: the exact test, every rotation but the identity once
        shift = (-slot[:, 0]) % m
        assert np.all(slot == (np.arange(m)[None, :] - shift[:, None]) % m)
        assert sorted(shift) == list(range(1, m))
    elif null == "block":
        # blocks of 4 consecutive movable slots (20 = 5 x 4) stay whole and in order;
        # 5! = 120 block orders, fewer than 300 draws: all 119 but the identity
        assert len(perms) == 119
        blocks = slot.reshape(119, -1, 4)
        assert np.all(np.diff(blocks, axis=2) == 1)
        assert np.all(blocks[:, :, 0] % 4 == 0)
        assert len({tuple(row) for row in blocks[:, :, 0]}) == 119
        assert (0, 4, 8, 12, 16) not in {tuple(row) for row in blocks[:, :, 0]}
    else:
        assert len({tuple(row) for row in slot}) == 300  # 20! orders: sampled


def test_null_permutations_last_block_shorter_and_seeded():
    perms = null_permutations(7, 400, "block", block_size=3, seed=2)
    # blocks {0,1,2}, {3,4,5}, {6}: 3! = 6 orders, each a concatenation of whole blocks; all but the identity
    orders = {tuple(row) for row in perms}
    assert len(perms) == len(orders) == 5
    assert (0, 1, 2, 6, 3, 4, 5) in orders and (6, 3, 4, 5, 0, 1, 2) in orders
    assert (0, 1, 2, 3, 4, 5, 6) not in orders
    # more rotations than draws: drawn without replacement, never the identity, seeded
    drawn = null_permutations(50, 30, "circular_shift", seed=2)
    assert len({tuple(row) for row in drawn}) == 30 and not np.any(np.all(drawn == np.arange(50), axis=1))
    assert np.array_equal(drawn, null_permutations(50, 30, "circular_shift", seed=2))
    assert not np.array_equal(drawn, null_permutations(50, 30, "circular_shift", seed=3))
    # with replacement: exactly n_perm uniform draws from the whole group
    shifts = null_permutations(5, 5000, "circular_shift", seed=4, replace=True)[:, 0]
    assert np.all(np.abs(np.bincount(shifts, minlength=5) / 5000 - 0.2) < 0.03)


def test_p_value_formula_on_a_hand_case():
    null = [0.1, 0.5, 0.3, 0.5]
    assert permutation_p_value(null, 0.5) == pytest.approx((1 + 2) / 5)  # two ties count as >=
    assert permutation_p_value(null, 0.6) == pytest.approx(1 / 5)  # the smallest possible p
    assert permutation_p_value(null, 0.0) == pytest.approx(5 / 5)
    assert permutation_p_value(null, 0.4) == pytest.approx(3 / 5)
    # rounding noise on a tie is still a tie (never anti-conservative)
    assert permutation_p_value(null, 0.5 + 1e-15) == pytest.approx(3 / 5)
    assert math.isnan(permutation_p_value(null, float("nan")))


def test_randomized_ties_rank_the_observed_value_uniformly_among_its_ties():
    null = [0.1, 0.5, 0.3, 0.5]  # observed 0.5 ties with two draws: rank 1, 2 or 3 among the three
    draws = [permutation_p_value(null, 0.5, ties="randomized", seed=s) for s in range(3000)]
    values, counts = np.unique(np.round(draws, 12), return_counts=True)
    assert np.allclose(values, [1 / 5, 2 / 5, 3 / 5])
    assert np.all(np.abs(counts / 3000 - 1 / 3) < 0.03)
    assert permutation_p_value(null, 0.4, ties="randomized") == pytest.approx(3 / 5)  # no ties: as the formula


def test_circular_shift_p_value_enumerated_by_hand():
    # |attribution| ranks 4,3,2,1 and attention ranks 4,3,1,2 (no special tokens).
    # Spearman of the attention rolled right by s, worked by hand from centred
    # ranks (norms 5): s=0: 4/5, s=1: 2/5, s=2: -4/5, s=3: -2/5.
    attribution = np.array([-4.0, 3.0, 2.0, -1.0])
    attention = np.array([0.4, 0.3, 0.1, 0.2])
    by_shift = {0: 0.8, 1: 0.4, 2: -0.8, 3: -0.4}
    # n_perm >= 3 other rotations: the exact test over all of them, p = (1 + 0) / (1 + 3)
    table, null = permutation_test(attribution, attention, n_perm=999, seed=7, metrics=["spearman_rho"], return_null=True)
    assert sorted(null["spearman_rho"]) == pytest.approx(sorted([by_shift[1], by_shift[2], by_shift[3]]))
    row = table.iloc[0]
    assert row["observed"] == pytest.approx(0.8) and row["n_perm"] == 3
    assert row["p_value"] == pytest.approx(1 / 4)
    # attention rolled right by 1 (observed 0.4, the others 0.8, -0.8, -0.4 relative to it): p = (1 + 1) / 4
    table = permutation_test(attribution, np.roll(attention, 1), n_perm=999, metrics=["spearman_rho"])
    assert table["observed"].iloc[0] == pytest.approx(0.4) and table["p_value"].iloc[0] == pytest.approx(2 / 4)
    # two draws without replacement from the three: p = (1 + #{drawn >= observed}) / 3
    table, null = permutation_test(attribution, np.roll(attention, 1), n_perm=2, seed=1, metrics=["spearman_rho"], return_null=True)
    drawn = null["spearman_rho"]
    assert len(set(np.round(drawn, 9))) == 2 and set(np.round(drawn, 9)) <= {0.8, -0.8, -0.4}
    assert table["p_value"].iloc[0] == pytest.approx((1 + np.sum(drawn >= 0.4)) / 3)


def test_special_tokens_stay_put_in_the_null():
    # attention is huge at the special first token, and so is |attribution|: holding it in place,
    # every null draw keeps that agreement, so the observed value is not extreme.
    rng = np.random.default_rng(3)
    n = 30
    a = rng.normal(size=n)
    a[0] = 50.0
    r = rng.gamma(2.0, size=n)
    r[0] = 80.0
    special = np.zeros(n, bool)
    special[0] = True
    held = permutation_test(a, r, special_mask=special, n_perm=199, metrics=["cosine_raw"])
    moved = permutation_test(a, r, n_perm=199, metrics=["cosine_raw"])
    assert held["p_value"].iloc[0] > 0.2
    assert moved["p_value"].iloc[0] < 0.05  # without holding it, its coincidence looks significant


def test_permutation_test_table_and_planted_agreement():
    rng = np.random.default_rng(4)
    a = rng.normal(size=200)
    r = np.abs(a) + 0.3 * rng.gamma(2.0, size=200)  # strongly agreeing
    table = permutation_test(a, r, n_perm=99, seed=1)
    assert list(table.columns) == ["metric", "observed", "p_value", "null_mean", "null_std", "n_perm", "null", "block_size", "alternative", "attribution_as"]
    assert list(table["metric"]) == list(METRICS)
    expected = similarity(a, r)
    assert np.allclose(table["observed"], [expected[m] for m in METRICS])
    rank_based = table.set_index("metric").loc[["spearman_rho", "kendall_tau", "cosine_ranks", "rbo", "jaccard_top"], "p_value"]
    assert np.allclose(rank_based, 1 / 100)  # no null draw reaches the observed value
    assert (table["alternative"] == "greater").all()


def test_document_significance_one_row_per_attention_and_metric():
    rng = np.random.default_rng(5)
    a = rng.normal(size=40)
    table = document_significance(a, {"final": rng.gamma(2.0, size=40), "all": rng.gamma(2.0, size=40)}, n_perm=19, null="block")
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns[:2]) == ["attention", "metric"]
    assert len(table) == 2 * len(METRICS)
    assert set(table["block_size"]) == {7}  # ceil(sqrt(40))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"null": "shuffle"}, "null must be one of"),
        ({"n_perm": 0}, "n_perm must be a positive integer"),
        ({"null": "block", "block_size": 50}, "block_size must be an integer in"),
        ({"special_mask": np.ones(10)}, "special_mask must be a boolean array"),
        ({"special_mask": np.arange(10) > 0}, "need at least 2 movable"),
        ({"ties": "mid"}, "ties must be"),
        ({"metrics": ["spearman"]}, "unknown metrics"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=message):
        permutation_test(rng.normal(size=10), rng.gamma(2.0, size=10), **kwargs)


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match="attribution has 3 tokens but attention has 4"):
        permutation_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"attentions must have shape \(P, 3\)"):
        similarity_batch([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("percent", [7, 14, 28])
def test_batch_top_sets_use_the_exact_count(percent):
    """At n = 100, a float product makes 7% of n one too large; the batch
    metrics use the same exact count as similarity()."""
    rng = np.random.default_rng(percent)
    a, r = rng.normal(size=100), rng.random(100)
    batch = similarity_batch(a, r[None], top_percent=percent)
    single = similarity(a, r, top_percent=percent)
    for metric in ("jaccard_top", "cosine_minmax_top", "cosine_ranks_top"):
        assert float(np.asarray(batch[metric]).ravel()[0]) == pytest.approx(single[metric])
