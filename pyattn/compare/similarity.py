"""Similarity between a document's token attributions and the attention its
tokens receive.

All metrics compare two vectors over the same token positions: ``attribution``
(per-token scores) and ``attention`` (attention received, never negative).

Signed or magnitude, always said: by default (``attribution_as="magnitude"``)
attributions enter every metric except ``cosine_raw`` as magnitudes
``|attribution|`` -- a strongly negative token mattered too (it pushed toward
another class), as the original notebooks argued, and attention has no sign to
tell support from opposition. ``attribution_as="signed"`` compares the signed
scores instead (a token that opposes the prediction then ranks last).
``cosine_raw`` always uses the signed scores. Every table :func:`compare`
returns carries an ``attribution_as`` column.

Conventions, stated once:

- *min-max*: ``(x - min) / (max - min)`` of each vector on its own.
- *ranks* run upward: the smallest value has rank 1 and the largest rank ``n``
  (``scipy.stats.rankdata``, ties averaged), so cosine of ranks weighs the
  most important tokens most.
- *top k%*: the ``ceil(k/100 * n)`` positions with the largest values.

Fixed from the original notebooks (``../shared/reference/``):

- the all-layers 95th-percentile threshold was taken from the final layer's
  values; here every threshold comes from the vector it cuts;
- the "top 95% ranks" cut kept ranks ``<= ceil(0.95 n)``, i.e. dropped the top
  5% and kept the rest; here the top-5% versions keep the top 5%;
- the all-layers Kendall tau printed was the layer-12 value; here each
  attention choice gets its own;
- a column named Jaccard held a thresholded cosine; here ``jaccard_top`` is the
  Jaccard index of the two top-k% position sets.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from pyattn._checks import ATTRIBUTION_AS, check_attribution_as  # noqa: F401  (ATTRIBUTION_AS importable here as before)
from pyattn.errors import InputError, MissingSpecialTokens  # MissingSpecialTokens importable here as before 1.1

__all__ = [
    "METRICS",
    "similarity",
    "compare",
    "dataset_similarity",
    "token_masks",
    "rank_biased_overlap",
    "minmax",
    "cosine",
    "top_positions",
    "top_k_count",
    "MASKS",
    "MissingSpecialTokens",
]


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


def cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Cosine of two vectors; NaN when either is all zero.

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
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return float("nan")
    return float(np.dot(x, y) / (nx * ny))


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
    low, high = float(np.min(x)), float(np.max(x))
    return (x - low) / (high - low) if high > low else np.zeros_like(x)


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
    k = top_k_count(percent, len(x))
    order = np.lexsort((np.arange(len(x)), -x))
    return np.sort(order[:k])


def _keep_top(x: np.ndarray, percent: float) -> np.ndarray:
    kept = np.zeros_like(x)
    positions = top_positions(x, percent)
    kept[positions] = x[positions]
    return kept


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
    n = len(x)
    if n == 0:
        return float("nan")
    rank_x = np.lexsort((np.arange(n), -x))
    rank_y = np.lexsort((np.arange(n), -y))
    seen_x, seen_y = np.zeros(n, bool), np.zeros(n, bool)
    overlap, total = 0, 0.0
    for depth in range(1, n + 1):
        a, b = rank_x[depth - 1], rank_y[depth - 1]
        if a == b:
            overlap += 1
        else:
            overlap += int(seen_y[a]) + int(seen_x[b])
        seen_x[a] = seen_y[b] = True
        total += (overlap / depth) * p**depth
    return float((overlap / n) * p**n + (1 - p) / p * total)


def similarity(
    attribution,
    attention,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    attribution_as: str = "magnitude",
) -> dict[str, float]:
    """Every metric for one pair of vectors, as a dict (see :data:`METRICS`).

    Parameters
    ----------
    attribution, attention:
        ``(N,)`` each, over the same positions.
    attribution_as:
        ``"magnitude"`` compares ``|attribution|`` (default), ``"signed"`` the
        signed scores; ``cosine_raw`` always uses the signed scores.

    Examples
    --------
    >>> round(similarity([3.0, -2.0, 0.5], [0.7, 0.2, 0.1])["spearman_rho"], 3)
    1.0
    >>> round(similarity([3.0, -2.0, 0.5], [0.7, 0.2, 0.1], attribution_as="signed")["spearman_rho"], 3)
    0.5
    """
    from scipy import stats

    check_attribution_as(attribution_as)
    a_raw = as_vector(attribution, "attribution")
    r = as_vector(attention, "attention")
    if a_raw.shape != r.shape:
        raise InputError(f"attribution has {a_raw.shape[0]} tokens but attention has {r.shape[0]}; they must match")
    if len(a_raw) < 2:
        raise InputError(f"need at least 2 tokens to compare, got {len(a_raw)}")
    a_used = np.abs(a_raw) if attribution_as == "magnitude" else a_raw
    a = minmax(a_used)
    b = minmax(r)

    def above(x: np.ndarray, threshold: float) -> np.ndarray:
        return np.where(x >= threshold, x, 0.0)

    ranks_a, ranks_b = stats.rankdata(a_used), stats.rankdata(r)
    top_a, top_b = set(top_positions(a_used, top_percent)), set(top_positions(r, top_percent))

    def quietly(fn, *args):
        # A constant vector has no correlation: NaN, without scipy's warning.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            try:
                value = fn(*args)
            except ValueError:
                return float("nan")
        return float(value.statistic if hasattr(value, "statistic") else value[0])

    return {
        "cosine_raw": cosine(a_raw, r),
        "cosine_minmax": cosine(a, b),
        "cosine_minmax_above_median": cosine(above(a, np.median(a)), above(b, np.median(b))),
        "cosine_minmax_above_mean": cosine(above(a, np.mean(a)), above(b, np.mean(b))),
        "cosine_minmax_above_p95": cosine(above(a, np.percentile(a, 95)), above(b, np.percentile(b, 95))),
        "cosine_minmax_top": cosine(_keep_top(a, top_percent), _keep_top(b, top_percent)),
        "cosine_ranks": cosine(ranks_a, ranks_b),
        "cosine_ranks_top": cosine(_keep_top(ranks_a, top_percent), _keep_top(ranks_b, top_percent)),
        "kendall_tau": quietly(stats.kendalltau, a_used, r),
        "spearman_rho": quietly(stats.spearmanr, a_used, r),
        "pearson_r": quietly(stats.pearsonr, a_used, r) if np.ptp(a_used) > 0 and np.ptp(r) > 0 else float("nan"),
        "rbo": rank_biased_overlap(a_used, r, rbo_p),
        "jaccard_top": len(top_a & top_b) / len(top_a | top_b),
    }


#: Names of the metrics :func:`similarity` returns, in order.
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


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from stop_words import get_stop_words

    return frozenset(get_stop_words("english"))


def display_token(token: str) -> str:
    """A token as a reader sees it: without the BPE space marker ('Ġ') or
    the WordPiece continuation marker ('##')."""
    return token.replace("Ġ", "").replace("▁", "").removeprefix("##")



def token_masks(tokens: Sequence[str], special_tokens: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Boolean masks over positions (True = kept):

    - ``all``: every position;
    - ``no_special``: without the special tokens (``special_tokens``, e.g. the
      tokenizer's ``all_special_tokens``);
    - ``alphabetic``: tokens whose display form is alphabetic (no punctuation,
      numbers or specials);
    - ``no_stopwords``: alphabetic tokens that are not English stopwords (the
      list shipped in the ``stop-words`` package; nothing is downloaded).

    Without ``special_tokens`` (None or empty) only ``all`` is returned: the
    other masks would keep the special tokens while their names say they do
    not. Asking :func:`compare` for one of them then raises
    :class:`MissingSpecialTokens`.

    >>> token_masks(["<s>", "Ġcat", ",", "</s>"], ["<s>", "</s>"])["no_special"].nonzero()[0].tolist()
    [1, 2]
    """
    if not special_tokens:
        return {"all": np.ones(len(tokens), bool)}
    special = set(special_tokens)
    shown = [display_token(t) for t in tokens]
    no_special = np.array([t not in special for t in tokens])
    alphabetic = np.array([s.isalpha() for s in shown]) & no_special
    stop = _stopwords()
    no_stopwords = alphabetic & np.array([s.lower() not in stop for s in shown])
    return {"all": np.ones(len(tokens), bool), "no_special": no_special, "alphabetic": alphabetic, "no_stopwords": no_stopwords}


MASKS = ("all", "no_special", "alphabetic", "no_stopwords")


def compare(
    attribution,
    attentions: Mapping[str, object],
    tokens: Sequence[str] | None = None,
    special_tokens: Sequence[str] | None = None,
    masks: Sequence[str] = MASKS,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    attribution_as: str = "magnitude",
):
    """A tidy table of every metric for one document.

    Parameters
    ----------
    attribution:
        ``(N,)`` per-token attributions.
    attentions:
        Name (e.g. ``"final"``, ``"all"``, ``"0-5"``, ``"final, scaled"``) ->
        attention received ``(N,)``.
    tokens, special_tokens:
        Needed for every mask but ``all`` (see :func:`token_masks`); a mask
        that drops special tokens without being told which they are raises
        :class:`MissingSpecialTokens` rather than silently keeping them.
    attribution_as:
        ``"magnitude"`` or ``"signed"`` (see :func:`similarity`).

    Returns
    -------
    pandas.DataFrame
        One row per (attention, mask): ``attention``, ``mask``, ``tokens``
        (how many positions the mask keeps), ``attribution_as``, and one
        column per metric in :data:`METRICS`.

    >>> table = compare([0.5, -2.0, 1.0, 0.1], {"final": [0.1, 0.5, 0.3, 0.1]}, masks=["all"])
    >>> table[["attention", "mask", "tokens", "attribution_as"]].values.tolist()
    [['final', 'all', 4, 'magnitude']]
    """
    import pandas as pd

    check_attribution_as(attribution_as)
    a = as_vector(attribution, "attribution")
    if tokens is not None and len(tokens) != len(a):
        raise InputError(f"got {len(tokens)} tokens for {len(a)} attribution scores")
    masks = [masks] if isinstance(masks, str) else list(masks)
    unknown = [m for m in masks if m not in MASKS]
    if unknown:
        raise InputError(f"unknown masks {unknown}: choose from {list(MASKS)}")
    if tokens is None and any(m != "all" for m in masks):
        raise InputError(f"masks {[m for m in masks if m != 'all']} need the document's tokens: pass tokens=")
    available = token_masks(tokens, special_tokens) if tokens is not None else {"all": np.ones(len(a), bool)}
    missing = [m for m in masks if m not in available]
    if missing:
        raise MissingSpecialTokens(
            f"masks {missing} drop special tokens, but no special tokens were given: pass "
            "special_tokens=tokenizer.all_special_tokens (or use masks=['all'])"
        )
    rows = []
    for name, values in attentions.items():
        r = as_vector(values, f"attention {name!r}")
        if r.shape != a.shape:
            raise InputError(f"attention {name!r} has {r.shape[0]} tokens but attribution has {a.shape[0]}")
        for mask_name in masks:
            keep = available[mask_name]
            metrics = (
                similarity(a[keep], r[keep], top_percent, rbo_p, attribution_as)
                if keep.sum() >= 2
                else dict.fromkeys(METRICS, float("nan"))
            )
            rows.append({"attention": name, "mask": mask_name, "tokens": int(keep.sum()), "attribution_as": attribution_as, **metrics})
    return pd.DataFrame(rows)


def dataset_similarity(tables: Sequence[object], document_ids: Sequence[object] | None = None):
    """Dataset-level similarity from per-document :func:`compare` tables.

    Parameters
    ----------
    tables : sequence of pandas.DataFrame
        One :func:`compare` table per document (same attention choices and
        masks in each).
    document_ids : sequence, optional
        One id per table (default ``0 .. len(tables) - 1``), written to the
        ``document`` column.

    Returns
    -------
    per_document : pandas.DataFrame
        Every document's rows with a ``document`` column.
    means : pandas.DataFrame
        One row per attention choice x mask (x ``attribution_as``): for each
        metric its mean over documents (``<metric>_mean``), its standard
        deviation (``<metric>_std``, NaN for one document), and ``documents``,
        the number of documents with a value of the first metric
        (``cosine_raw``).

    Raises
    ------
    ValueError
        If ``tables`` is empty or ``document_ids`` has another length.

    Examples
    --------
    >>> first = compare([0.5, -2.0, 1.0, 0.1], {"final": [0.1, 0.5, 0.3, 0.1]}, masks=["all"])
    >>> second = compare([1.0, 2.0, 3.0, 4.0], {"final": [0.1, 0.2, 0.3, 0.4]}, masks=["all"])
    >>> per_document, means = dataset_similarity([first, second], document_ids=["a", "b"])
    >>> per_document[["document", "spearman_rho"]].round(4).values.tolist()
    [['a', 0.9487], ['b', 1.0]]
    >>> means[["attention", "mask", "spearman_rho_mean", "documents"]].round(4).values.tolist()
    [['final', 'all', 0.9743, 2]]
    """
    import pandas as pd

    if not tables:
        raise InputError("no per-document tables to aggregate")
    ids = list(range(len(tables))) if document_ids is None else list(document_ids)
    if len(ids) != len(tables):
        raise InputError(f"got {len(tables)} tables but {len(ids)} document ids")
    per_document = pd.concat([table.assign(document=doc) for doc, table in zip(ids, tables)], ignore_index=True)
    metrics = [m for m in METRICS if m in per_document.columns]
    keys = [k for k in ("attention", "mask", "attribution_as") if k in per_document.columns]
    grouped = per_document.groupby(keys, sort=False)[metrics]
    means = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_std")).join(grouped.count()[metrics[:1]].rename(columns={metrics[0]: "documents"}))
    return per_document, means.reset_index()
