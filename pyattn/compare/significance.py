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
conventions, computed for many permuted attention vectors at once by the same
core (:func:`pyattn.compare.metrics.similarity_batch`). The ranking convention is the caller's:
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
from pyattn.errors import InputError
from pyattn.compare.metrics import METRICS, as_vector, similarity_batch  # similarity_batch importable here as before 1.1

__all__ = [
    "ar1",
    "NULLS",
    "null_permutations",
    "permutation_p_value",
    "permutation_test",
    "document_significance",
]

#: The null models :func:`null_permutations` knows.
NULLS = ("circular_shift", "block", "naive_shuffle")

TIE_TOLERANCE = 1e-12
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
        raise InputError(f"special_mask must be a boolean array of shape ({n},) (True = special token, held in place), got dtype {mask.dtype} and shape {mask.shape}")
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
        raise InputError(f"null must be one of {NULLS}, got {null!r}")
    if not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise InputError(f"n_perm must be a positive integer, got {n_perm!r}")
    special = check_special_mask(special_mask, n)
    movable = np.flatnonzero(~special)
    m = len(movable)
    if m < 2:
        raise InputError(f"need at least 2 movable (non-special) positions to permute, got {m} of {n}")
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
            raise InputError(f"block_size must be an integer in [1, {m}] (the movable positions), got {block_size!r}")
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
        raise InputError(f"null must be a non-empty 1-D array of statistics, got shape {values.shape}")
    if ties not in ("conservative", "randomized"):
        raise InputError(f"ties must be 'conservative' or 'randomized', got {ties!r}")
    observed = float(observed)
    if math.isnan(observed):
        return float("nan")
    if np.isnan(values).any():
        raise InputError("null contains NaN statistics while the observed one is a number")
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
        raise InputError(f"attribution has {a.shape[0]} tokens but attention has {r.shape[0]}; they must match")
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
        raise InputError("attentions is empty: give at least one named attention vector")
    tables = [permutation_test(attribution, values, **options).assign(attention=name) for name, values in attentions.items()]
    table = pd.concat(tables, ignore_index=True)
    return table[["attention"] + [c for c in table.columns if c != "attention"]]
