"""Quadrature rules on [0, 1] for the integrated-gradients path integral.

A rule is ``(alphas, weights)``: the integral of ``g`` over [0, 1] is
approximated by ``sum(weights * g(alphas))``.

Nested rules (``"clenshaw-curtis"``, ``"trapezoid"``) have levels whose nodes
contain every node of the level before: level ``k`` has ``2**k + 1`` nodes
(``k = 0``: the two ends), so refining from ``2**k + 1`` to ``2**(k+1) + 1``
nodes costs ``2**k`` new evaluations and the result at the finer level reuses
every earlier one. The difference between two levels is a free error
estimate. Open rules (``"gausslegendre"`` and Captum's ``"riemann_*"``) are
taken from Captum itself, so that pyattn integrates at exactly Captum's nodes.
"""

from __future__ import annotations

import math

import numpy as np

from pyattn.errors import InputError

__all__ = ["NESTED_METHODS", "METHODS", "rule", "nested_level", "level_of"]

NESTED_METHODS = ("clenshaw-curtis", "trapezoid")
OPEN_METHODS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")
METHODS = NESTED_METHODS + OPEN_METHODS


def _clenshaw_curtis(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Clenshaw-Curtis on [0, 1] with ``n_nodes >= 2`` nodes ``(1 - cos(j pi / n)) / 2``,
    ``n = n_nodes - 1``; weights from the cosine-series formula (exact for
    polynomials of degree ``n``; all positive)."""
    n = n_nodes - 1
    j = np.arange(n + 1)
    theta = j * np.pi / n
    weights = np.ones(n + 1)
    for k in range(1, n // 2 + 1):
        b = 1.0 if 2 * k == n else 2.0
        weights -= b * np.cos(2 * k * theta) / (4 * k * k - 1)
    c = np.full(n + 1, 2.0)
    c[0] = c[-1] = 1.0
    weights = weights * c / n / 2.0  # /2: from [-1, 1] to [0, 1]
    alphas = (1.0 - np.cos(theta)) / 2.0
    alphas[0], alphas[-1] = 0.0, 1.0
    if n % 2 == 0:
        alphas[n // 2] = 0.5
    return alphas, weights


def _trapezoid(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    alphas = np.linspace(0.0, 1.0, n_nodes)
    weights = np.full(n_nodes, 1.0 / (n_nodes - 1))
    weights[0] = weights[-1] = 0.5 / (n_nodes - 1)
    return alphas, weights


def rule(method: str, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``method`` with ``n_nodes`` evaluations.

    Parameters
    ----------
    method:
        One of :data:`METHODS`.
    n_nodes:
        Number of evaluations (Captum's ``n_steps``). Nested rules need at
        least 2 (they contain both ends); with 1 they use the midpoint.

    Returns
    -------
    alphas, weights: float64 arrays of shape ``(n_nodes,)``.

    Examples
    --------
    >>> alphas, weights = rule("clenshaw-curtis", 5)
    >>> round(float(weights @ alphas**4), 12)  # exact for degree <= 4
    0.2
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if n_nodes < 1:
        raise InputError(f"a quadrature rule needs at least 1 node, got {n_nodes}")
    if method in NESTED_METHODS:
        if n_nodes == 1:
            return np.array([0.5]), np.array([1.0])
        return _clenshaw_curtis(n_nodes) if method == "clenshaw-curtis" else _trapezoid(n_nodes)
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    return np.asarray(alphas(n_nodes), dtype=np.float64), np.asarray(step_sizes(n_nodes), dtype=np.float64)


def level_of(n_nodes: int) -> int | None:
    """The nested level ``k`` with ``2**k + 1 == n_nodes``, or None.

    Parameters
    ----------
    n_nodes : int

    Returns
    -------
    int or None

    Examples
    --------
    >>> level_of(5), level_of(9), level_of(6)
    (2, 3, None)
    """
    if n_nodes >= 2 and ((n_nodes - 1) & (n_nodes - 2)) == 0:
        return int(math.log2(n_nodes - 1))
    return None


def nested_level(method: str, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level ``level`` of a nested rule (``2**level + 1`` nodes on [0, 1]), with
    each node's place in one shared list of evaluations: level 0's two ends
    first (``alpha = 1`` before ``alpha = 0``), then each level's new nodes, so
    that refining from level k to k + 1 reuses every evaluation made so far.

    Parameters
    ----------
    method : str
        One of :data:`NESTED_METHODS`.
    level : int
        ``>= 0``.

    Returns
    -------
    alphas : numpy.ndarray, shape (2**level + 1,), float64
        Nodes in ascending order.
    weights : numpy.ndarray, shape (2**level + 1,), float64
        Quadrature weights (sum 1).
    index : numpy.ndarray, shape (2**level + 1,), int64
        ``index[i]``: the order in which node ``i`` is first needed.

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. If ``method`` is not nested.

    Examples
    --------
    >>> alphas, weights, index = nested_level("trapezoid", 2)
    >>> alphas.tolist(), weights.tolist(), index.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [0.125, 0.25, 0.25, 0.25, 0.125], [1, 3, 2, 4, 0])
    """
    if method not in NESTED_METHODS:
        raise InputError(f"{method!r} is not nested; nested rules: {', '.join(NESTED_METHODS)}")
    n = 2**level
    alphas, weights = rule(method, n + 1)
    index = np.empty(n + 1, dtype=np.int64)
    # node j of level `level` (j / n) first appears at level l where j / n = j' / 2**l with j' odd
    order = {n: 0, 0: 1}
    count = 2
    for l in range(1, level + 1):
        stride = n // 2**l
        for j in range(stride, n, 2 * stride):
            order[j] = count
            count += 1
    for j in range(n + 1):
        index[j] = order[j]
    return alphas, weights, index
