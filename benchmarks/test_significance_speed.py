"""Speed of the per-document permutation test and the head map: the vectorised
routes against looping pyattn.compare.similarity.similarity over the permutations (the
obvious way to write it), in the same run.

    python -m pytest benchmarks/test_significance_speed.py --benchmark-only
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pyattn.compare.agreement import head_agreement_per_document
from pyattn.compare.significance import null_permutations, permutation_test
from pyattn.compare.similarity import similarity

QUICK = os.environ.get("PYATTN_BENCH_QUICK") == "1"
N_PERM = 99 if QUICK else 199
SIZES = [512] if QUICK else [512, 2048]


def _pair(n: int):
    rng = np.random.default_rng(0)
    a = rng.normal(size=n)
    return a, np.abs(a) * 0.1 + rng.gamma(2.0, size=n)


@pytest.mark.parametrize("n", SIZES)
def test_permutation_test_vectorised(benchmark, n):
    benchmark.group = f"significance-{n}"
    a, r = _pair(n)
    table = benchmark(permutation_test, a, r, n_perm=N_PERM, null="block")
    benchmark.extra_info["n_perm"] = int(table["n_perm"].iloc[0])


@pytest.mark.parametrize("n", SIZES)
def test_permutation_test_loop_over_similarity(benchmark, n):
    benchmark.group = f"significance-{n}"
    a, r = _pair(n)
    perms = null_permutations(n, N_PERM, "block", seed=0)

    def loop():
        return [similarity(a, r[p]) for p in perms]

    benchmark.pedantic(loop, rounds=1 if n > 1024 else 3, iterations=1)


@pytest.mark.parametrize("n", SIZES)
def test_head_map_spearman_144_heads(benchmark, n):
    """One document of the base-shaped Longformer (12 x 12 heads), Spearman,
    the n_perm the head map uses by default for 144 heads (5,759)."""
    benchmark.group = f"head-map-{n}"
    rng = np.random.default_rng(1)
    a = rng.normal(size=n)
    attention = rng.gamma(2.0, size=(12, 12, n))
    benchmark.pedantic(head_agreement_per_document, args=(a, attention), kwargs={"n_perm": 5759}, rounds=1 if n > 1024 else 3, iterations=1)
