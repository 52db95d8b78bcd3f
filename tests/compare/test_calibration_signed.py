"""Calibration of the per-document permutation tests under the signed
ranking convention (``attribution_as="signed"``), as tests/compare/test_calibration.py
does for magnitudes: on 1,000 independent pairs of AR(1) vectors the p-values
of each metric are uniform (Kolmogorov-Smirnov p > 0.01), and with attention
that follows the *signed* attribution the test has power, while the magnitude
convention, blind to the sign, has much less."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pyattn.compare.significance import ar1, permutation_p_value, permutation_test

pytestmark = pytest.mark.slow  # about 10 s

METRICS = ["spearman_rho", "kendall_tau", "pearson_r", "rbo", "cosine_minmax", "cosine_raw"]


def simulate(n, sims, n_perm, rho, attribution_as, seed):
    rng = np.random.default_rng(seed)
    p = np.empty((sims, len(METRICS)))
    for s in range(sims):
        a = ar1(n, 0.8, rng)
        noise = ar1(n, 0.8, rng) * 0.6  # unit variance
        z = (a - a.mean()) / a.std()  # the signed attribution, standardised
        r = np.exp(rho * z + np.sqrt(1 - rho**2) * noise)
        table, null = permutation_test(a, r, n_perm=n_perm, metrics=METRICS, seed=s, return_null=True, attribution_as=attribution_as)
        for j, metric in enumerate(METRICS):
            p[s, j] = permutation_p_value(null[metric], table["observed"].iloc[j], ties="randomized", seed=s)
        draws = int(table["n_perm"].iloc[0])
    return p, draws


def test_signed_p_values_are_uniform_under_independence():
    p, draws = simulate(64, 1000, 99, 0.0, "signed", seed=5)
    assert draws == 63  # every circular shift: the exact test
    jitter = np.random.default_rng(98).uniform(size=len(p)) / (1 + draws)
    for j, metric in enumerate(METRICS):
        assert stats.kstest(p[:, j] - jitter, "uniform").pvalue > 0.01, metric
        assert np.mean(p[:, j] <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000), metric


def test_signed_test_has_power_where_attention_follows_the_signed_attribution():
    signed, _ = simulate(128, 100, 99, 0.5, "signed", seed=6)
    magnitude, _ = simulate(128, 100, 99, 0.5, "magnitude", seed=6)
    power_signed = np.mean(signed <= 0.05, axis=0)
    power_magnitude = np.mean(magnitude <= 0.05, axis=0)
    ranked = [METRICS.index(m) for m in ("spearman_rho", "kendall_tau", "pearson_r")]
    assert np.all(power_signed[ranked] > 0.6), dict(zip(METRICS, power_signed))
    assert np.all(power_magnitude[ranked] < power_signed[ranked] - 0.3), dict(zip(METRICS, power_magnitude))
