"""Calibration of the per-document permutation tests on synthetic pairs of
locally autocorrelated vectors (AR(1)), the CI-sized version of
benchmarks/significance_calibration.py (whose full-size table is
benchmarks/results/significance.md).

Under independence the locality-keeping nulls give uniform p-values; the
naive token shuffle rejects far too often; with planted agreement the test
rejects. Every simulation is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pyattn.compare.significance import ar1, permutation_p_value, permutation_test
from pyattn.compare.similarity import METRICS

pytestmark = pytest.mark.slow  # about 40 s in all on 2 cores

#: metrics whose values are often exactly tied by chance (top-5% sets that do not
#: overlap give 0): their conservative p-values are valid but pile up at 1
DISCRETE = ("cosine_minmax_above_p95", "cosine_minmax_top", "cosine_ranks_top", "jaccard_top")
SE_05 = np.sqrt(0.05 * 0.95 / 1000)


def simulate(null, n, sims, n_perm, metrics=METRICS, rho=0.0, block_size=None, seed=0):
    """p-values (conservative and randomized ties) for `sims` pairs:
    attribution AR(1), attention exp(rho z(|attribution|) + sqrt(1 - rho^2) AR(1)), phi = 0.8."""
    rng = np.random.default_rng(seed)
    draws = set()
    conservative = np.empty((sims, len(metrics)))
    randomized = np.empty((sims, len(metrics)))
    for s in range(sims):
        a = ar1(n, 0.8, rng)
        noise = ar1(n, 0.8, rng) * 0.6  # unit variance
        u = (np.abs(a) - np.abs(a).mean()) / np.abs(a).std()
        r = np.exp(rho * u + np.sqrt(1 - rho**2) * noise)
        table, null_values = permutation_test(a, r, null=null, n_perm=n_perm, block_size=block_size, metrics=metrics, seed=s, return_null=True)
        conservative[s] = table["p_value"]
        draws.add(int(table["n_perm"].iloc[0]))
        for j, metric in enumerate(metrics):
            randomized[s, j] = permutation_p_value(null_values[metric], table["observed"].iloc[j], ties="randomized", seed=s)
    (used,) = draws
    return conservative, randomized, used


def ks_uniform(p: np.ndarray, n_perm: int) -> float:
    """KS p-value of Monte Carlo p-values against uniform, each spread over its
    step of 1/(1 + n_perm) first (exactly uniform when p is uniform on
    {1..1+n_perm}/(1+n_perm)); the steps alone would make KS reject."""
    jitter = np.random.default_rng(99).uniform(size=len(p)) / (1 + n_perm)
    return float(stats.kstest(p - jitter, "uniform").pvalue)


def test_circular_shift_null_is_calibrated_for_every_metric():
    # 1,000 independent pairs, 64 tokens, all 63 circular shifts each (the exact test)
    conservative, randomized, draws = simulate("circular_shift", 64, 1000, 99)
    assert draws == 63
    for j, metric in enumerate(METRICS):
        assert ks_uniform(randomized[:, j], draws) > 0.01, metric
        if metric not in DISCRETE:
            assert ks_uniform(conservative[:, j], draws) > 0.01, metric
        # valid at 0.05 (within 3 standard errors of Monte Carlo noise)
        assert np.mean(conservative[:, j] <= 0.05) <= 0.05 + 3 * SE_05, metric
        assert np.mean(conservative[:, j] <= 0.10) <= 0.10 + 3 * np.sqrt(0.1 * 0.9 / 1000), metric
    # the discrete metrics' conservative p-values are 1 whenever the top sets miss each other
    assert np.mean(conservative[:, METRICS.index("jaccard_top")] == 1.0) > 0.5


def test_block_null_is_calibrated_with_blocks_longer_than_the_autocorrelation():
    # 128 tokens in 8 blocks of 16 (the AR(1) correlation, 0.8^k, has fallen below 0.03 at 16);
    # 99 of the 8! - 1 block orders, without replacement
    metrics = ["spearman_rho", "jaccard_top"]
    conservative, randomized, draws = simulate("block", 128, 1000, 99, metrics=metrics, block_size=16, seed=1)
    for j, metric in enumerate(metrics):
        assert ks_uniform(randomized[:, j], draws) > 0.01, metric
        assert np.mean(conservative[:, j] <= 0.05) <= 0.05 + 3 * SE_05, metric


def test_naive_shuffle_is_anti_conservative():
    metrics = ["spearman_rho", "cosine_minmax"]
    conservative, _, _ = simulate("naive_shuffle", 64, 400, 99, metrics=metrics, seed=2)
    for j, metric in enumerate(metrics):
        rate = np.mean(conservative[:, j] <= 0.05)
        assert rate > 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400), (metric, rate)  # clearly above the nominal 5%
    # the same pairs under circular shifts stay near 5%
    calibrated, _, _ = simulate("circular_shift", 64, 400, 99, metrics=metrics, seed=2)
    assert np.all(np.mean(calibrated <= 0.05, axis=0) < np.mean(conservative <= 0.05, axis=0))


@pytest.mark.parametrize("null", ["circular_shift", "block"])
def test_power_with_planted_agreement(null):
    # attention = exp(0.5 z(|attribution|) + sqrt(0.75) AR(1)), 128 tokens
    metrics = ["spearman_rho", "cosine_minmax"]
    conservative, _, _ = simulate(null, 128, 100, 99, metrics=metrics, rho=0.5, block_size=16, seed=3)
    power = np.mean(conservative <= 0.05, axis=0)
    assert np.all(power > 0.6), dict(zip(metrics, power))
