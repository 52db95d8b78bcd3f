"""Quadrature rules for the path integral: against exact integrals and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyattn.attribution import quadrature


@pytest.mark.parametrize("n_nodes", [2, 3, 5, 9, 17, 12])
def test_clenshaw_curtis_is_exact_for_polynomials_up_to_its_degree(n_nodes):
    alphas, weights = quadrature.rule("clenshaw-curtis", n_nodes)
    assert (weights > 0).all() and alphas[0] == 0.0 and alphas[-1] == 1.0
    degree = n_nodes - 1 + (1 if (n_nodes - 1) % 2 == 0 else 0)  # odd n+1 nodes: exact one degree more
    for d in range(degree + 1):
        assert weights @ alphas**d == pytest.approx(1 / (d + 1), abs=1e-14), d


def test_clenshaw_curtis_converges_fast_on_a_smooth_integrand():
    exact = math.e - 1  # integral of exp over [0, 1]
    errors = [abs(w @ np.exp(a) - exact) for a, w in (quadrature.rule("clenshaw-curtis", n) for n in (3, 5, 9))]
    assert errors[0] < 1e-3 and errors[1] < 1e-6 and errors[2] < 1e-13


def test_trapezoid_is_numpys():
    alphas, weights = quadrature.rule("trapezoid", 9)
    f = np.sin(3 * alphas) + alphas**2
    assert weights @ f == pytest.approx(np.trapezoid(f, alphas), abs=1e-15)


@pytest.mark.parametrize("method", quadrature.NESTED_METHODS)
def test_levels_are_nested_and_indexed_once(method):
    seen: dict[int, float] = {}
    for level in range(6):
        alphas, weights, index = quadrature.nested_level(method, level)
        assert sorted(index.tolist()) == list(range(2**level + 1))
        for a, i in zip(alphas, index):
            if i in seen:  # an earlier level's node: the same alpha
                assert a == pytest.approx(seen[i], abs=1e-15)
            seen[int(i)] = float(a)
        np.testing.assert_allclose(weights, quadrature.rule(method, 2**level + 1)[1])
        # alpha = 1 is evaluated first, alpha = 0 second
        assert alphas[index == 0][0] == 1.0 and alphas[index == 1][0] == 0.0


def test_open_rules_are_captums():
    from captum.attr._utils.approximation_methods import approximation_parameters

    sizes, alphas = approximation_parameters("gausslegendre")
    a, w = quadrature.rule("gausslegendre", 7)
    np.testing.assert_array_equal(a, alphas(7))
    np.testing.assert_array_equal(w, sizes(7))
    assert quadrature.level_of(17) == 4 and quadrature.level_of(12) is None and quadrature.level_of(2) == 0
