"""Per-document significance of attribution-attention agreement.

Is a Spearman of 0.19 between one document's attributions and the attention
its tokens receive more than chance? Answered here by a permutation test whose
null keeps the attention vector's local structure: banded attention received
is locally autocorrelated (neighbouring tokens receive similar attention), and
so are attributions, so a naive token shuffle, which destroys that structure,
makes chance agreement look significant (it is *anti-conservative*; see
``benchmarks/results/significance.md``).

Nulls (``null=``), each a group of permutations of the *movable* positions
(special tokens, given as a boolean ``special_mask``, are held in place):

- ``"circular_shift"`` (the default, recommended): the attention vector
  rotated by an offset (1 .. m-1 over the m movable positions), keeping every
  neighbourhood but one seam;
- ``"block"``: the movable positions cut into consecutive blocks of
  ``block_size`` tokens (the last one shorter when m is not a multiple), the
  blocks put in a random order; keeps structure within blocks only, so the
  blocks must be longer than the vectors' autocorrelation (with the default
  ``ceil(sqrt(m))`` on strongly autocorrelated vectors it rejects too often:
  see the table);
- ``"naive_shuffle"``: a uniformly random permutation of the movable tokens.
  Offered to show what it gets wrong; valid only when one of the two vectors
  has no local structure.

p-values are one-sided, for "agreement greater than chance" (every metric here
is larger when the vectors agree more), over ``n_perm`` draws from the null
group, without replacement and excluding the identity:

    p = (1 + #{null >= observed}) / (1 + n_perm)

which is exact (uniform on {1, ..., 1 + n_perm} / (1 + n_perm) under the
null, for a continuous statistic) for any ``n_perm`` when the pair's joint
distribution is unchanged by the null's permutations; local structure is
kept up to the seams, and how close that comes on autocorrelated (AR(1))
vectors is measured in ``benchmarks/results/significance.md``. Never below
1 / (1 + n_perm). When the group has no more than ``n_perm`` other elements
(a circular shift of a short document: m - 1 shifts), all of them are used and
``n_perm`` in the result is their number: the exact permutation test.
Ties count as ``>=`` (a null value within 1e-12 relative of the observed one
is a tie, so floating-point rounding can never make the test anti-conservative);
with ``ties="randomized"`` the tied draws (and the observed value itself) are
ranked at random instead, giving p-values that are exactly uniform under the
null even for the discrete metrics (``jaccard_top`` and the top-k% cosines,
which are often exactly 0 by chance).

The metrics are those of :func:`pyattn.compare.similarity.similarity`, with its
conventions, computed here for many permuted attention vectors at once
(:func:`similarity_batch`). The ranking convention is the caller's:
``attribution_as="magnitude"`` (default: ``|attribution|`` enters every metric
but ``cosine_raw``) or ``"signed"`` (the signed scores, so a token that opposes
the prediction ranks last); every table says which in its ``attribution_as``
column.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from pyattn._checks import check_attribution_as
from pyattn.compare.similarity import METRICS, as_vector, top_k_count

__all__ = [
    "ar1",
    "NULLS",
    "null_permutations",
    "similarity_batch",
    "permutation_p_value",
    "permutation_test",
    "document_significance",
]

#: The null models :func:`null_permutations` knows.
NULLS = ("circular_shift", "block", "naive_shuffle")

TIE_TOLERANCE = 1e-12
_KENDALL_PAIRWISE_LIMIT = 60_000  # above this many token pairs, Kendall runs per row through scipy
_CHUNK_ELEMENTS = 4_000_000  # rows x tokens per chunk of permuted vectors


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary AR(1) series ``x[i] = phi x[i-1] + e[i]`` with unit
    normal innovations: a locally autocorrelated vector, as attention
    received along a document is, for calibrating the nulls.

    >>> ar1(4, 0.0, np.random.default_rng(0)).shape
    (4,)
    """
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def default_block_size(movable: int) -> int:
    """Default block length for the ``"block"`` null: ``ceil(sqrt(m))`` for m
    movable positions (about as many blocks as tokens per block)."""
    return max(1, math.ceil(math.sqrt(movable)))


def check_special_mask(special_mask, n: int) -> np.ndarray:
    if special_mask is None:
        return np.zeros(n, bool)
    mask = np.asarray(special_mask)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(f"special_mask must be a boolean array of shape ({n},) (True = special token, held in place), got dtype {mask.dtype} and shape {mask.shape}")
    return mask


def null_permutations(
    n: int,
    n_perm: int,
    null: str = "circular_shift",
    *,
    block_size: int | None = None,
    special_mask=None,
    seed: int | np.random.Generator | None = 0,
    replace: bool = False,
) -> np.ndarray:
    """Draws from a null group of permutations of ``n`` token positions.

    Parameters
    ----------
    n : int
        Number of tokens.
    n_perm : int
        Number of draws. Without replacement and never the identity (so
        the p-value is exact): when the group has no more than ``n_perm``
        other elements, all of them are returned (fewer rows than
        ``n_perm``: the exact permutation test). Groups of more than 8! =
        40,320 orders (naive shuffles of more than 8 tokens, more than 8
        blocks) are sampled with replacement (the identity and repeats are
        then rare).
    null : {"circular_shift", "block", "naive_shuffle"}
        The null model (see the module docstring).
    block_size : int, optional
        Tokens per block for ``"block"`` (default ``ceil(sqrt(m))`` for m
        movable positions).
    special_mask : array of bool, shape (n,), optional
        True at special tokens, which every permutation holds in place.
    seed : int or numpy Generator
        Seeds the draws.
    replace : bool
        Draw ``n_perm`` times uniformly from the whole group instead
        (identity included; always ``n_perm`` rows).

    Returns
    -------
    numpy.ndarray of int64, shape (draws, n)
        Row ``j`` is a permutation ``pi``; the permuted vector is ``x[pi]``.
        ``draws = n_perm`` except for small groups (see ``n_perm``).

    Examples
    --------
    >>> null_permutations(5, 2, "circular_shift", seed=1)
    array([[3, 4, 0, 1, 2],
           [2, 3, 4, 0, 1]])

    Asking for more draws than the group has: every shift but the identity,
    once each.

    >>> null_permutations(5, 10, "circular_shift", seed=1).tolist()
    [[4, 0, 1, 2, 3], [3, 4, 0, 1, 2], [2, 3, 4, 0, 1], [1, 2, 3, 4, 0]]
    >>> import numpy as np
    >>> null_permutations(6, 3, "circular_shift", special_mask=np.array([1, 0, 0, 0, 0, 1], bool), seed=0)[:, [0, 5]].tolist()  # specials stay
    [[0, 5], [0, 5], [0, 5]]
    """
    if null not in NULLS:
        raise ValueError(f"null must be one of {NULLS}, got {null!r}")
    if not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm must be a positive integer, got {n_perm!r}")
    special = check_special_mask(special_mask, n)
    movable = np.flatnonzero(~special)
    m = len(movable)
    if m < 2:
        raise ValueError(f"need at least 2 movable (non-special) positions to permute, got {m} of {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if null == "circular_shift":
        shifts = _draw_group_elements(m, n_perm, rng, replace)
        order = (np.arange(m)[None, :] - shifts[:, None]) % m  # rolled right by the shift
        return _embed(order, movable, n)
    if null == "naive_shuffle":
        units, unit_start, unit_length = m, np.arange(m), np.ones(m, np.int64)
    else:
        size = default_block_size(m) if block_size is None else block_size
        if not isinstance(size, (int, np.integer)) or not 1 <= size <= m:
            raise ValueError(f"block_size must be an integer in [1, {m}] (the movable positions), got {block_size!r}")
        unit_start = np.arange(0, m, size)
        unit_length = np.minimum(unit_start + size, m) - unit_start
        units = len(unit_start)
    # orders of the units (tokens or blocks): all of them, or a sample, without the identity when the group is small
    if units <= _ENUMERABLE_UNITS:
        all_orders = _all_orders(units)  # row 0 is the identity
        unit_order = all_orders[_draw_group_elements(len(all_orders), n_perm, rng, replace)]
    else:  # m! or (blocks)! > 40,320: draws with replacement, the identity among them with chance below 1/40,000
        unit_order = rng.permuted(np.tile(np.arange(units), (n_perm, 1)), axis=1)
    # concatenate the units of each row in their drawn order
    rows = len(unit_order)
    first, length = unit_start[unit_order].ravel(), unit_length[unit_order].ravel()
    offsets = np.cumsum(length) - length  # where each unit lands in the flattened rows
    within = np.arange(rows * m) - np.repeat(offsets, length)
    order = (np.repeat(first, length) + within).reshape(rows, m)
    return _embed(order, movable, n)


_ENUMERABLE_UNITS = 8  # 8! = 40,320 orders


@lru_cache(maxsize=None)
def _all_orders(units: int) -> np.ndarray:
    orders = np.array(list(itertools.permutations(range(units))), dtype=np.int64)
    orders.setflags(write=False)
    return orders


def _draw_group_elements(size: int, n_perm: int, rng: np.random.Generator, replace: bool) -> np.ndarray:
    """Indices of group elements (0 = the identity) to use as null draws.
    ``replace=False``: every non-identity element when there are no more
    than ``n_perm`` of them (the exact permutation test), else ``n_perm`` of
    them drawn without replacement. ``replace=True``: ``n_perm`` uniform
    draws from the whole group. Either way the observed value is
    exchangeable with the draws, so (1 + #{null >= observed}) / (1 + draws)
    is a valid p-value; without replacement it is exactly uniform for a
    continuous statistic (with replacement, draws of the identity tie)."""
    if replace:
        return rng.integers(0, size, size=n_perm)
    if size - 1 <= n_perm:
        return np.arange(1, size)
    return 1 + rng.choice(size - 1, size=n_perm, replace=False)


def _embed(order: np.ndarray, movable: np.ndarray, n: int) -> np.ndarray:
    permutations = np.tile(np.arange(n, dtype=np.int64), (len(order), 1))
    permutations[:, movable] = movable[order]
    return permutations


# --------------------------------------------------------------------------
# Every metric of pyattn.compare.similarity.similarity, for a stack of attention rows


def _rows_cosine(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine of a vector (n,) with each row of (P, n); NaN for zero norms."""
    nx = np.linalg.norm(x)
    nr = np.linalg.norm(rows, axis=1)
    with np.errstate(all="ignore"):
        out = rows @ x / (nr * nx)
    out[(nr == 0) | (nx == 0)] = np.nan
    return out


def _rows_minmax(rows: np.ndarray) -> np.ndarray:
    low = rows.min(axis=1, keepdims=True)
    span = rows.max(axis=1, keepdims=True) - low
    with np.errstate(all="ignore"):
        out = np.where(span > 0, (rows - low) / np.where(span > 0, span, 1.0), 0.0)
    return out


def _rows_top_mask(rows: np.ndarray, k: int) -> np.ndarray:
    """True at each row's k largest values, ties broken by position (earlier
    first), as :func:`pyattn.compare.similarity.top_positions`."""
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    mask = np.zeros(rows.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def _top_mask(x: np.ndarray, k: int) -> np.ndarray:
    return _rows_top_mask(x[None, :], k)[0]


def _rows_pearson(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    rc = rows - rows.mean(axis=1, keepdims=True)
    return _rows_cosine(xc, rc)


def _rows_kendall_tau_b(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of x with each row: (C - D) / sqrt((n0 - n1)(n0 - n2))
    from the signs of all pairwise differences."""
    n = len(x)
    pairs = n * (n - 1) // 2
    if pairs > _KENDALL_PAIRWISE_LIMIT:
        from scipy import stats

        out = np.empty(len(rows))
        with np.errstate(all="ignore"):
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


def _rows_rbo(x: np.ndarray, rows: np.ndarray, p: float) -> np.ndarray:
    """Extrapolated RBO (as :func:`pyattn.compare.similarity.rank_biased_overlap`) of
    the ranking by x with the ranking by each row. The overlap of the top-d
    prefixes counts the items whose depth in both rankings is below d."""
    if not 0 < p < 1:
        raise ValueError(f"rbo_p must be in (0, 1), got {p}")
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


def similarity_batch(
    attribution,
    attentions,
    *,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    metrics: Sequence[str] = METRICS,
    attribution_as: str = "magnitude",
) -> dict[str, np.ndarray]:
    """Every metric of :func:`pyattn.compare.similarity.similarity` between one
    attribution vector and many attention vectors at once.

    Row ``j`` of each result equals ``similarity(attribution,
    attentions[j], attribution_as=attribution_as)[metric]`` (same
    conventions; ties in top-k% sets broken by position).

    Parameters
    ----------
    attribution : array-like, shape (N,)
    attentions : array-like, shape (P, N)
        Attention vectors (e.g. permutations of one), one per row.
    top_percent, rbo_p : float
        As in :func:`pyattn.compare.similarity.similarity`.
    metrics : sequence of str
        Which metrics to compute (default all, :data:`pyattn.compare.similarity.METRICS`).
    attribution_as : {"magnitude", "signed"}
        ``|attribution|`` (default) or the signed scores in every metric but
        ``cosine_raw`` (always signed), as in :func:`pyattn.compare.similarity.similarity`.

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
        raise ValueError(f"attentions must have shape (P, {len(a_raw)}) (one attention vector per row), got {rows.shape}")
    if not np.all(np.isfinite(rows)):
        raise ValueError("attentions contain NaN or infinite values")
    if len(a_raw) < 2:
        raise ValueError(f"need at least 2 tokens to compare, got {len(a_raw)}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: choose from {list(METRICS)}")
    wanted = set(metrics)
    n = len(a_raw)
    k = top_k_count(top_percent, n)  # the same exact count as similarity()
    used = np.abs(a_raw) if attribution_as == "magnitude" else a_raw  # the ranking convention
    out: dict[str, np.ndarray] = {}

    if wanted & {"cosine_raw"}:
        out["cosine_raw"] = _rows_cosine(a_raw, rows)
    minmax_names = {"cosine_minmax", "cosine_minmax_above_median", "cosine_minmax_above_mean", "cosine_minmax_above_p95", "cosine_minmax_top"}
    if wanted & minmax_names:
        a = _rows_minmax(used[None, :])[0]
        b = _rows_minmax(rows)
        out["cosine_minmax"] = _rows_cosine(a, b)
        for name, cut_a, cut_b in (
            ("median", np.median(a), np.median(b, axis=1, keepdims=True)),
            ("mean", np.mean(a), np.mean(b, axis=1, keepdims=True)),
            ("p95", np.percentile(a, 95), np.percentile(b, 95, axis=1, keepdims=True)),
        ):
            out[f"cosine_minmax_above_{name}"] = _rows_cosine(np.where(a >= cut_a, a, 0.0), np.where(b >= cut_b, b, 0.0))
        out["cosine_minmax_top"] = _rows_cosine(np.where(_top_mask(a, k), a, 0.0), np.where(_rows_top_mask(b, k), b, 0.0))
    if wanted & {"cosine_ranks", "cosine_ranks_top", "spearman_rho"}:
        ranks_a = stats.rankdata(used)
        ranks_b = stats.rankdata(rows, axis=1)
        out["cosine_ranks"] = _rows_cosine(ranks_a, ranks_b)
        out["cosine_ranks_top"] = _rows_cosine(np.where(_top_mask(ranks_a, k), ranks_a, 0.0), np.where(_rows_top_mask(ranks_b, k), ranks_b, 0.0))
        out["spearman_rho"] = _rows_pearson(ranks_a, ranks_b)
    if "kendall_tau" in wanted:
        out["kendall_tau"] = _rows_kendall_tau_b(used, rows)
    if "pearson_r" in wanted:
        out["pearson_r"] = _rows_pearson(used, rows)
    if "rbo" in wanted:
        out["rbo"] = _rows_rbo(used, rows, rbo_p)
    if "jaccard_top" in wanted:
        both = _rows_top_mask(rows, k) & _top_mask(used, k)[None, :]
        intersection = both.sum(axis=1)
        out["jaccard_top"] = intersection / (2 * k - intersection)
    return {name: out[name] for name in metrics}


# --------------------------------------------------------------------------
# p-values


def permutation_p_value(null, observed: float, *, ties: str = "conservative", seed: int | np.random.Generator | None = 0) -> float:
    """One-sided Monte Carlo permutation p-value for "greater than chance".

    ``ties="conservative"`` (default): ``(1 + #{null >= observed}) / (1 + n_perm)``,
    counting a null value within 1e-12 (relative) of the observed one as a tie,
    hence as ``>=``.
    ``ties="randomized"``: the observed value's rank among itself and the
    tied null values is drawn uniformly, so the p-value is
    ``(1 + #{null > observed} + U) / (1 + n_perm)`` with ``U`` uniform on
    ``0 .. #{ties}``: exactly uniform under the null for discrete statistics.

    Parameters
    ----------
    null : array-like, shape (n_perm,)
        The statistic on each null draw; NaN draws are not allowed.
    observed : float
        The statistic on the data; NaN gives NaN.

    Returns
    -------
    float in [1 / (1 + n_perm), 1]

    Example
    -------
    >>> permutation_p_value([0.1, 0.5, 0.3, 0.5], 0.5)
    0.6
    """
    values = np.asarray(null, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"null must be a non-empty 1-D array of statistics, got shape {values.shape}")
    if ties not in ("conservative", "randomized"):
        raise ValueError(f"ties must be 'conservative' or 'randomized', got {ties!r}")
    observed = float(observed)
    if math.isnan(observed):
        return float("nan")
    if np.isnan(values).any():
        raise ValueError("null contains NaN statistics while the observed one is a number")
    tolerance = TIE_TOLERANCE * max(1.0, abs(observed))
    greater = int(np.count_nonzero(values > observed + tolerance))
    tied = int(np.count_nonzero(np.abs(values - observed) <= tolerance))
    if ties == "conservative":
        return (1 + greater + tied) / (1 + len(values))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return (1 + greater + int(rng.integers(0, tied + 1))) / (1 + len(values))


def _null_statistics(a, attention, permutations, metrics, top_percent, rbo_p, attribution_as="magnitude") -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Observed statistics and the statistic under each permutation (computed
    once per distinct permutation)."""
    unique, inverse = np.unique(permutations, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // len(attention))
    values: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    options = dict(top_percent=top_percent, rbo_p=rbo_p, metrics=metrics, attribution_as=attribution_as)
    observed = similarity_batch(a, attention[None, :], **options)
    for start in range(0, len(unique), rows_per_chunk):
        chunk = attention[unique[start : start + rows_per_chunk]]
        for name, v in similarity_batch(a, chunk, **options).items():
            values[name].append(v)
    null = {name: np.concatenate(parts)[inverse] for name, parts in values.items()}
    return {name: float(v[0]) for name, v in observed.items()}, null


def permutation_test(
    attribution,
    attention,
    *,
    null: str = "circular_shift",
    n_perm: int = 999,
    block_size: int | None = None,
    special_mask=None,
    metrics: Sequence[str] = METRICS,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    ties: str = "conservative",
    seed: int | None = 0,
    return_null: bool = False,
    attribution_as: str = "magnitude",
):
    """Per-document permutation test of every agreement metric.

    The attention vector is permuted under ``null`` (special tokens held in
    place) ``n_perm`` times; each metric's p-value is one-sided ("agreement
    greater than chance"): ``(1 + #{null >= observed}) / (1 + n_perm)`` (see
    :func:`permutation_p_value`). The same draws serve every metric.

    Parameters
    ----------
    attribution : array-like, shape (N,)
        Token attributions (signed; the metrics take them as
        ``attribution_as`` says).
    attention : array-like, shape (N,)
        Attention received per token.
    null : {"circular_shift", "block", "naive_shuffle"}
        Null model; ``"naive_shuffle"`` is anti-conservative for locally
        autocorrelated vectors (offered for comparison).
    n_perm : int
        Number of null draws.
    block_size : int, optional
        Block length for ``"block"`` (default ``ceil(sqrt(movable tokens))``).
    special_mask : array of bool, shape (N,), optional
        True at special tokens (held in place).
    metrics, top_percent, rbo_p
        As in :func:`pyattn.compare.similarity.similarity`.
    ties : {"conservative", "randomized"}
        How null values equal to the observed one count.
    seed : int
        Seeds the draws (and the randomized tie-breaking).
    return_null : bool
        Also return the null statistics ``{metric: (n_perm,)}``.
    attribution_as : {"magnitude", "signed"}
        The ranking convention of the attributions in the metrics (as in
        :func:`pyattn.compare.similarity.similarity`): ``"magnitude"`` (default)
        compares ``|attribution|``, ``"signed"`` the signed scores;
        ``cosine_raw`` is always signed.

    Returns
    -------
    pandas.DataFrame
        One row per metric: ``metric``, ``observed`` (equal to
        ``similarity(attribution, attention, attribution_as=...)[metric]``),
        ``p_value``, ``null_mean``, ``null_std``, ``n_perm`` (null draws
        used: fewer than asked when the group is smaller), ``null``,
        ``block_size`` (NaN unless ``null="block"``), ``alternative``
        (``"greater"``), ``attribution_as``.
        With ``return_null=True``, ``(table, null_statistics)``.

    Examples
    --------
    Attention that follows ``|attribution|`` closely, over 80 tokens:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> attribution = rng.normal(size=80)
    >>> attention = np.abs(attribution) + 0.1 * rng.random(80)
    >>> table = permutation_test(attribution, attention, n_perm=199, seed=0).set_index("metric")
    >>> row = table.loc["spearman_rho"]
    >>> round(float(row["observed"]), 4), float(row["p_value"]), int(row["n_perm"])
    (0.9969, 0.0125, 79)

    80 tokens have only 79 circular shifts besides the identity, so all 79
    are used and the smallest p-value is ``1 / (1 + 79) = 0.0125``.
    """
    import pandas as pd

    check_attribution_as(attribution_as)
    a = as_vector(attribution, "attribution")
    r = as_vector(attention, "attention")
    if a.shape != r.shape:
        raise ValueError(f"attribution has {a.shape[0]} tokens but attention has {r.shape[0]}; they must match")
    rng = np.random.default_rng(seed)
    permutations = null_permutations(len(r), n_perm, null, block_size=block_size, special_mask=special_mask, seed=rng)
    observed, null_values = _null_statistics(a, r, permutations, list(metrics), top_percent, rbo_p, attribution_as)
    draws = len(permutations)
    movable = len(r) - int(check_special_mask(special_mask, len(r)).sum())
    used_block = (default_block_size(movable) if block_size is None else block_size) if null == "block" else float("nan")
    rows = []
    for name in metrics:
        v = null_values[name]
        p = permutation_p_value(v, observed[name], ties=ties, seed=rng) if not np.isnan(v).any() else float("nan")
        rows.append(
            {
                "metric": name,
                "observed": observed[name],
                "p_value": p,
                "null_mean": float(np.mean(v)),
                "null_std": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                "n_perm": draws,
                "null": null,
                "block_size": used_block,
                "alternative": "greater",
                "attribution_as": attribution_as,
            }
        )
    table = pd.DataFrame(rows)
    return (table, null_values) if return_null else table


def document_significance(
    attribution,
    attentions: Mapping[str, object],
    **options,
):
    """:func:`permutation_test` for each named attention vector of one
    document (e.g. ``{"final": ..., "all": ...}`` from
    `pyattn.attention_views`).

    Options (``null``, ``n_perm``, ``attribution_as``, ``seed``, ...) are
    :func:`permutation_test`'s.

    Returns
    -------
    pandas.DataFrame
        :func:`permutation_test`'s columns with ``attention`` first, one row
        per attention choice x metric. Each choice gets its own draws from
        the same seed.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> attribution = rng.normal(size=80)
    >>> views = {"follows": np.abs(attribution) + 0.1 * rng.random(80), "noise": rng.random(80)}
    >>> table = document_significance(attribution, views, n_perm=199)
    >>> table[table["metric"] == "spearman_rho"][["attention", "p_value"]].values.tolist()
    [['follows', 0.0125], ['noise', 0.0625]]
    """
    import pandas as pd

    if not attentions:
        raise ValueError("attentions is empty: give at least one named attention vector")
    tables = [permutation_test(attribution, values, **options).assign(attention=name) for name, values in attentions.items()]
    table = pd.concat(tables, ignore_index=True)
    return table[["attention"] + [c for c in table.columns if c != "attention"]]
