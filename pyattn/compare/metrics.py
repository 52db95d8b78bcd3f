"""The one metric core: every agreement metric between a document's token
attributions and the attention its tokens receive, computed for one
attribution vector against a batch of attention vectors. A single pair is a
batch of one: :func:`pyattn.compare.similarity.similarity` (one pair),
:func:`pyattn.compare.significance.permutation_test` (the permuted attention
vectors of a null) and :func:`pyattn.compare.agreement.head_agreement` (every
head's attention, and its nulls) all compute their numbers here.

The conventions (min-max, ranks running upward, top k% with ties broken by
position, ``attribution_as``) are stated in :mod:`pyattn.compare.similarity`.
A constant vector has no correlation: ``spearman_rho``, ``pearson_r`` and
``kendall_tau`` are NaN for it, and every cosine of an all-zero vector is NaN.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from pyattn._checks import check_attribution_as
from pyattn.errors import InputError

__all__ = [
    "METRICS",
    "LINEAR_METRICS",
    "similarity_batch",
    "linear_vectors",
    "cosine_matrix",
    "cosine",
    "minmax",
    "top_k_count",
    "top_positions",
    "rank_biased_overlap",
]

#: Names of the metrics, in the order every table gives them.
METRICS = (
    "cosine_raw",
    "cosine_minmax",
    "cosine_minmax_above_median",
    "cosine_minmax_above_mean",
    "cosine_minmax_above_p95",
    "cosine_minmax_top",
    "cosine_ranks",
    "cosine_ranks_top",
    "kendall_tau",
    "spearman_rho",
    "pearson_r",
    "rbo",
    "jaccard_top",
)

#: The metrics that are the cosine of two transformed vectors
#: (:func:`linear_vectors`): permuting the attention by ``pi`` equals
#: permuting the attribution's transform by ``pi``'s inverse, so a null of
#: many permutations is one matrix product.
LINEAR_METRICS = ("spearman_rho", "pearson_r", "cosine_raw")

_KENDALL_PAIRWISE_LIMIT = 60_000  # above this many token pairs, Kendall runs per row through scipy
_CHUNK_ELEMENTS = 4_000_000  # rows x token pairs per chunk of Kendall's sign matrices


def as_array(values) -> np.ndarray:
    """A float64 numpy array of a tensor (any device), array or list."""
    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(values, dtype=np.float64)


def as_vector(values, name: str) -> np.ndarray:
    """A 1-D float64 numpy copy of a tensor, array or list; NaN/inf refused."""
    array = as_array(values)
    if array.ndim != 1:
        raise InputError(f"{name} must be 1-D (one value per token), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


# --------------------------------------------------------------- building blocks
def cosine_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine of every row of ``x`` with every row of ``y``; NaN where either
    row is all zero.

    Parameters
    ----------
    x : numpy.ndarray, shape (P, N)
    y : numpy.ndarray, shape (K, N)

    Returns
    -------
    numpy.ndarray, shape (P, K)

    Examples
    --------
    >>> import numpy as np
    >>> cosine_matrix(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 1.0]])).round(4).tolist()
    [[0.7071], [nan]]
    """
    norm_x = np.linalg.norm(x, axis=1)
    norm_y = np.linalg.norm(y, axis=1)
    with np.errstate(all="ignore"):
        out = (x @ y.T) / (norm_x[:, None] * norm_y[None, :])
    out[(norm_x == 0)[:, None] | (norm_y == 0)[None, :]] = np.nan
    return out


def cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Cosine of two vectors (:func:`cosine_matrix` of a batch of one); NaN
    when either is all zero.

    Parameters
    ----------
    x, y : numpy.ndarray, shape (N,), float

    Returns
    -------
    float
        ``x . y / (|x| |y|)``, in [-1, 1], or NaN.

    Examples
    --------
    >>> import numpy as np
    >>> round(cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 4), cosine(np.zeros(2), np.ones(2))
    (0.7071, nan)
    """
    return float(cosine_matrix(np.asarray(x, np.float64)[None, :], np.asarray(y, np.float64)[None, :])[0, 0])


def _minmax_rows(rows: np.ndarray) -> np.ndarray:
    low = rows.min(axis=1, keepdims=True)
    span = rows.max(axis=1, keepdims=True) - low
    with np.errstate(all="ignore"):
        return np.where(span > 0, (rows - low) / np.where(span > 0, span, 1.0), 0.0)


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant vector becomes all zeros.

    Parameters
    ----------
    x : numpy.ndarray, shape (N,), float

    Returns
    -------
    numpy.ndarray, shape (N,), float
        ``(x - min) / (max - min)``.

    Examples
    --------
    >>> import numpy as np
    >>> minmax(np.array([2.0, 4.0, 3.0])).tolist(), minmax(np.array([5.0, 5.0])).tolist()
    ([0.0, 1.0, 0.5], [0.0, 0.0])
    """
    return _minmax_rows(np.asarray(x, np.float64)[None, :])[0]


def top_k_count(percent: float, n: int) -> int:
    """How many of ``n`` positions make the top ``percent`` %: exactly
    ``ceil(percent * n / 100)`` in exact arithmetic, and at least 1 when
    ``n > 0``. (A float product is one too large for 7, 14, 28, ... % at some
    ``n``: ``0.07 * 100`` is ``7.000000000000001``.) ``percent`` is read as the
    decimal its ``repr`` shows (``12.5`` is exactly 12.5).

    >>> top_k_count(7, 100), top_k_count(5, 21), top_k_count(0.1, 5)
    (7, 2, 1)
    """
    if isinstance(percent, bool) or not isinstance(percent, (int, float, np.integer, np.floating)):
        raise TypeError(f"percent must be a number in (0, 100], got {percent!r}")
    if not (math.isfinite(percent) and 0 < percent <= 100):
        raise InputError(f"percent must be in (0, 100], got {percent!r}")
    exact = Fraction(repr(float(percent))) if isinstance(percent, (float, np.floating)) else Fraction(int(percent))
    count = math.ceil(exact * n / 100)
    return max(1, count) if n > 0 else 0


def _top_mask_rows(rows: np.ndarray, k: int) -> np.ndarray:
    """True at each row's k largest values, ties broken by position (earlier first)."""
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    mask = np.zeros(rows.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def top_positions(x: np.ndarray, percent: float) -> np.ndarray:
    """Indices of the :func:`top_k_count` ``(percent, n)`` largest values (signed:
    pass ``abs(x)`` for magnitude), ties broken by position (earlier first),
    returned in position order.

    Parameters
    ----------
    x : numpy.ndarray, shape (N,), float
    percent : float
        In (0, 100].

    Returns
    -------
    numpy.ndarray, shape (k,), int64
        Sorted positions, ``k = ceil(percent % of N)``.

    Examples
    --------
    >>> import numpy as np
    >>> top_positions(np.array([0.1, 0.9, 0.5, 0.9]), 50).tolist()
    [1, 3]
    >>> top_positions(np.array([0.1, 0.9, 0.5, 0.9]), 1).tolist()  # ceil(0.04) = 1 member, the earlier tie
    [1]
    """
    x = np.asarray(x, np.float64)
    k = top_k_count(percent, len(x))
    return np.flatnonzero(_top_mask_rows(x[None, :], k)[0]).astype(np.int64)


def _above(rows: np.ndarray, cut: np.ndarray) -> np.ndarray:
    return np.where(rows >= cut, rows, 0.0)


def _centred(rows: np.ndarray) -> np.ndarray:
    """Each row minus its mean; a constant row exactly zero (its mean may
    round), so that its correlations are NaN, as scipy's are."""
    out = rows - rows.mean(axis=1, keepdims=True)
    out[np.ptp(rows, axis=1) == 0] = 0.0
    return out


def _kendall_tau_b_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of x with each row: (C - D) / sqrt((n0 - n1)(n0 - n2))
    from the signs of all pairwise differences (scipy's, row by row, for long
    vectors)."""
    n = len(x)
    pairs = n * (n - 1) // 2
    if pairs > _KENDALL_PAIRWISE_LIMIT:
        import warnings

        from scipy import stats

        out = np.empty(len(rows))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            for j, row in enumerate(rows):
                out[j] = stats.kendalltau(x, row).statistic
        return out
    i, k = np.triu_indices(n, 1)
    sign_x = np.sign(x[i] - x[k])
    ties_x = float(sign_x @ sign_x)
    out = np.empty(len(rows))
    chunk = max(1, _CHUNK_ELEMENTS // max(pairs, 1))
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        sign_r = np.sign(block[:, i] - block[:, k])
        concordance = sign_r @ sign_x
        norm_r = np.einsum("ij,ij->i", sign_r, sign_r)
        with np.errstate(all="ignore"):
            tau = concordance / np.sqrt(ties_x * norm_r)
        tau[(norm_r == 0) | (ties_x == 0)] = np.nan
        out[start : start + chunk] = tau
    return out


def _rbo_rows(x: np.ndarray, rows: np.ndarray, p: float) -> np.ndarray:
    """Extrapolated RBO (:func:`rank_biased_overlap`) of the ranking by x with
    the ranking by each row. The overlap of the top-d prefixes counts the
    items whose depth in both rankings is below d."""
    P, n = rows.shape
    depth_x = np.empty(n, np.int64)
    depth_x[np.argsort(-x, kind="stable")] = np.arange(n)
    order_r = np.argsort(-rows, axis=1, kind="stable")
    depth_r = np.empty_like(order_r)
    np.put_along_axis(depth_r, order_r, np.arange(n)[None, :].repeat(P, 0), axis=1)
    entered = np.maximum(depth_x[None, :], depth_r)  # depth (0-based) at which each item is in both prefixes
    counts = np.zeros((P, n), np.int64)
    np.add.at(counts, (np.arange(P)[:, None].repeat(n, 1), entered), 1)
    overlap = np.cumsum(counts, axis=1)  # A_d * d for d = 1..n
    depths = np.arange(1, n + 1)
    weights = p ** depths.astype(np.float64)
    total = (overlap / depths) @ weights
    return (overlap[:, -1] / n) * p**n + (1 - p) / p * total


def rank_biased_overlap(x: np.ndarray, y: np.ndarray, p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap (Webber, Moffat & Zobel 2010, eq. 32)
    of the rankings of positions by ``x`` and by ``y`` (largest first, ties
    broken by position): ``RBO_ext = A_k p^k + (1 - p)/p * sum_{d=1..k} A_d p^d``
    with ``A_d`` the overlap of the top-d prefixes divided by d, and k = n.

    Parameters
    ----------
    x, y : numpy.ndarray, shape (N,)
        Scores of the same N positions (signed as given: pass ``abs(x)`` to
        rank by magnitude).
    p : float
        Persistence in (0, 1): smaller p weighs the top more.

    Returns
    -------
    float
        1 for identical rankings, near 0 for rankings that disagree at the top;
        NaN for N = 0.

    Raises
    ------
    ValueError
        If ``p`` is not in (0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> rank_biased_overlap(np.array([3.0, 2.0, 1.0]), np.array([30.0, 20.0, 10.0]))
    1.0

    Reversed, the top-1 sets differ, the top-2 share one of two, the top-3 all:
    ``0.9**3 + 0.1/0.9 * (0 * 0.9 + 1/2 * 0.81 + 1 * 0.729) = 0.855``.

    >>> round(rank_biased_overlap(np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0])), 4)
    0.855
    """
    if not 0 < p < 1:
        raise InputError(f"p must be in (0, 1), got {p}")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) == 0:
        return float("nan")
    return float(_rbo_rows(x, y[None, :], p)[0])


def linear_vectors(metric: str, attribution: np.ndarray, rows: np.ndarray, attribution_as: str = "magnitude") -> tuple[np.ndarray, np.ndarray]:
    """The transformed vectors whose cosine is a :data:`LINEAR_METRICS`
    metric: ``cosine_matrix(x[None], rows_t)[0]`` is the metric of the
    attribution with each row.

    ``spearman_rho``: centred ranks; ``pearson_r``: centred values (the
    attribution as ``attribution_as`` says); ``cosine_raw``: the signed
    attribution and the rows as they are. A constant vector is returned all
    zero, so that its correlations are NaN.

    Parameters
    ----------
    metric : {"spearman_rho", "pearson_r", "cosine_raw"}
    attribution : numpy.ndarray, shape (N,)
        Signed attributions.
    rows : numpy.ndarray, shape (K, N)
        Attention vectors.
    attribution_as : {"magnitude", "signed"}

    Returns
    -------
    x : numpy.ndarray, shape (N,)
    rows_t : numpy.ndarray, shape (K, N)

    Examples
    --------
    >>> import numpy as np
    >>> x, rows = linear_vectors("spearman_rho", np.array([0.5, -2.0, 1.0]), np.array([[0.1, 0.7, 0.2]]))
    >>> x.tolist(), rows.tolist(), cosine_matrix(x[None], rows).round(12).tolist()
    ([-1.0, 1.0, 0.0], [[-1.0, 1.0, 0.0]], [[1.0]])
    """
    if metric not in LINEAR_METRICS:
        raise InputError(f"metric must be one of {LINEAR_METRICS} (a cosine of transformed vectors), got {metric!r}")
    check_attribution_as(attribution_as)
    return _linear_vectors(metric, np.asarray(attribution, np.float64), np.asarray(rows, np.float64), attribution_as)


def _linear_vectors(metric: str, a: np.ndarray, rows: np.ndarray, attribution_as: str, ranks=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`linear_vectors` without the checks; ``ranks``: the ranks of the
    attribution (as used) and of the rows, when already computed."""
    if metric == "cosine_raw":  # always the signed attribution, uncentred
        return a, rows
    if metric == "spearman_rho":
        if ranks is None:
            from scipy import stats

            used = np.abs(a) if attribution_as == "magnitude" else a
            ranks = stats.rankdata(used), stats.rankdata(rows, axis=1)
        x, rows = ranks
    else:
        x = np.abs(a) if attribution_as == "magnitude" else a
    return _centred(np.reshape(x, (1, -1)))[0], _centred(rows)


# --------------------------------------------------------------- every metric
def similarity_batch(
    attribution,
    attentions,
    *,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    metrics: Sequence[str] = METRICS,
    attribution_as: str = "magnitude",
) -> dict[str, np.ndarray]:
    """Every metric (:data:`METRICS`) between one attribution vector and many
    attention vectors at once; :func:`pyattn.compare.similarity.similarity`
    is its batch of one.

    Parameters
    ----------
    attribution : array-like, shape (N,)
    attentions : array-like, shape (P, N)
        Attention vectors (e.g. permutations of one), one per row.
    top_percent, rbo_p : float
        As in :func:`pyattn.compare.similarity.similarity`.
    metrics : sequence of str
        Which metrics to compute (default all, :data:`METRICS`).
    attribution_as : {"magnitude", "signed"}
        ``|attribution|`` (default) or the signed scores in every metric but
        ``cosine_raw`` (always signed), as in
        :func:`pyattn.compare.similarity.similarity`.

    Returns
    -------
    dict of str to numpy.ndarray, each of shape (P,)

    Example
    -------
    >>> a = np.array([0.1, -2.0, 0.5, 0.0]); R = np.array([[1, 3, 2, 0], [3, 2, 1, 0.]])
    >>> similarity_batch(a, R, metrics=["spearman_rho"])["spearman_rho"]
    array([1. , 0.4])
    """
    from scipy import stats

    check_attribution_as(attribution_as)
    a_raw = as_vector(attribution, "attribution")
    rows = np.asarray(attentions, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(a_raw):
        raise InputError(f"attentions must have shape (P, {len(a_raw)}) (one attention vector per row), got {rows.shape}")
    if not np.all(np.isfinite(rows)):
        raise InputError("attentions contain NaN or infinite values")
    if len(a_raw) < 2:
        raise InputError(f"need at least 2 tokens to compare, got {len(a_raw)}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metrics {unknown}: choose from {list(METRICS)}")
    if "rbo" in metrics and not 0 < rbo_p < 1:
        raise InputError(f"rbo_p must be in (0, 1), got {rbo_p}")
    wanted = set(metrics)
    k = top_k_count(top_percent, len(a_raw))
    used = np.abs(a_raw) if attribution_as == "magnitude" else a_raw  # the ranking convention
    x = used[None, :]
    out: dict[str, np.ndarray] = {}

    ranks = (stats.rankdata(x, axis=1), stats.rankdata(rows, axis=1)) if wanted & {"cosine_ranks", "cosine_ranks_top", "spearman_rho"} else None
    for name in wanted & set(LINEAR_METRICS):
        vector, transformed = _linear_vectors(name, a_raw, rows, attribution_as, None if ranks is None else (ranks[0][0], ranks[1]))
        out[name] = cosine_matrix(vector[None, :], transformed)[0]
    if any(name.startswith("cosine_minmax") for name in wanted):
        a, b = _minmax_rows(x), _minmax_rows(rows)
        out["cosine_minmax"] = cosine_matrix(a, b)[0]
        for name, cut in (("median", np.median), ("mean", np.mean), ("p95", lambda v, axis, keepdims: np.percentile(v, 95, axis=axis, keepdims=keepdims))):
            out[f"cosine_minmax_above_{name}"] = cosine_matrix(_above(a, cut(a, axis=1, keepdims=True)), _above(b, cut(b, axis=1, keepdims=True)))[0]
        out["cosine_minmax_top"] = cosine_matrix(np.where(_top_mask_rows(a, k), a, 0.0), np.where(_top_mask_rows(b, k), b, 0.0))[0]
    if wanted & {"cosine_ranks", "cosine_ranks_top"}:
        ranks_a, ranks_b = ranks
        out["cosine_ranks"] = cosine_matrix(ranks_a, ranks_b)[0]
        out["cosine_ranks_top"] = cosine_matrix(np.where(_top_mask_rows(ranks_a, k), ranks_a, 0.0), np.where(_top_mask_rows(ranks_b, k), ranks_b, 0.0))[0]
    if "kendall_tau" in wanted:
        out["kendall_tau"] = _kendall_tau_b_rows(used, rows)
    if "rbo" in wanted:
        out["rbo"] = _rbo_rows(used, rows, rbo_p)
    if "jaccard_top" in wanted:
        intersection = (_top_mask_rows(rows, k) & _top_mask_rows(x, k)).sum(axis=1)
        out["jaccard_top"] = intersection / (2 * k - intersection)
    return {name: out[name] for name in metrics}
