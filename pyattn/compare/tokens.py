"""Token tables: top and bottom tokens of a document, overlap of the top sets
by attribution and by attention, aggregation by token type within a document
and across a dataset.

Tokens are kept raw (``Ġcompiler``) next to a display form without the
tokenizer's space marker (``compiler``); ``merge_forms=True`` aggregates the
two forms of a word (``Ġcompiler`` mid-sentence, ``compiler`` at the start) as
one type.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from pyattn.compare._pairs import token_pairs
from pyattn.compare.metrics import as_vector, minmax, top_positions
from pyattn.compare.similarity import display_token
from pyattn.errors import InputError

__all__ = ["top_tokens", "supporting_tokens", "opposing_tokens", "overlap_table", "token_type_totals", "dataset_token_table", "export_table"]


def _scores(values, tokens: Sequence[str], name: str = "scores") -> np.ndarray:
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], str):
        raise TypeError(f"{name} must be numbers, got strings: token tables take the values first and tokens second, e.g. top_tokens(attribution, tokens)")
    if isinstance(tokens, np.ndarray) and tokens.dtype.kind in "fiu":
        raise TypeError("tokens must be strings, got numbers: token tables take the values first and tokens second, e.g. top_tokens(attribution, tokens)")
    array = as_vector(values, name)
    if array.shape != (len(tokens),):
        raise InputError(f"got {len(tokens)} tokens but {name} of shape {array.shape}; expected ({len(tokens)},)")
    return array


def _table(tokens, values: np.ndarray, order: np.ndarray, by: str):
    import pandas as pd

    return pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1, dtype=np.int64),
            "token": [display_token(tokens[i]) for i in order],
            "raw_token": [tokens[i] for i in order],
            "position": order.astype(np.int64),
            "score": values[order],
            "by": by,
        }
    )


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive number of tokens, got {k!r}")
    return int(k)


RANKINGS = ("signed", "magnitude")


def top_tokens(values, tokens: Sequence[str], k: int = 10, by: str = "signed"):
    """The ``k`` highest-ranked tokens under a named convention.

    Parameters
    ----------
    values:
        ``(N,)`` per-token values (attribution or attention received).
    tokens:
        ``N`` token strings.
    by:
        ``"signed"``: largest value first (for attributions, the tokens that
        most support the explained class); ``"magnitude"``: largest ``|value|``
        first, support and opposition alike.

    Returns
    -------
    pandas.DataFrame
        rank (1 = first), token (display form), raw_token, position, score (the
        value itself, signed), by (the convention). Ties go to the earlier
        position.

    >>> top_tokens([0.1, -0.9, 0.5], ["a", "b", "c"], k=2)["token"].tolist()
    ['c', 'a']
    >>> top_tokens([0.1, -0.9, 0.5], ["a", "b", "c"], k=2, by="magnitude")["token"].tolist()
    ['b', 'c']
    """
    k = _check_k(k)
    array = _scores(values, tokens, "values")
    if by not in RANKINGS:
        raise InputError(f'by must be "signed" or "magnitude", got {by!r}')
    key = array if by == "signed" else np.abs(array)
    order = np.lexsort((np.arange(len(array)), -key))[:k]
    return _table(tokens, array, order, by)


def supporting_tokens(attribution, tokens: Sequence[str], k: int = 10):
    """The up to ``k`` tokens with the largest *positive* attribution, largest
    first: what pushes the model toward the explained class (the notebooks'
    top-k). Fewer than ``k`` rows when fewer tokens have a positive score.
    Columns as :func:`top_tokens`, ``by="supporting"``.

    >>> supporting_tokens([0.1, -0.9, 0.5], ["a", "b", "c"], k=5)["token"].tolist()
    ['c', 'a']
    """
    k = _check_k(k)
    array = _scores(attribution, tokens, "attribution")
    order = np.lexsort((np.arange(len(array)), -array))
    order = order[array[order] > 0][:k]
    return _table(tokens, array, order, "supporting")


def opposing_tokens(attribution, tokens: Sequence[str], k: int = 10):
    """The up to ``k`` tokens with the most *negative* attribution, most
    negative first: what pushes the model away from the explained class (the
    notebooks' bottom-k). Columns as :func:`top_tokens`, ``by="opposing"``.

    >>> opposing_tokens([0.1, -0.9, 0.5], ["a", "b", "c"])["token"].tolist()
    ['b']
    """
    k = _check_k(k)
    array = _scores(attribution, tokens, "attribution")
    order = np.lexsort((np.arange(len(array)), array))
    order = order[array[order] < 0][:k]
    return _table(tokens, array, order, "opposing")


def overlap_table(attribution, attention, tokens: Sequence[str], percent: float = 5.0, attribution_as: str = "magnitude"):
    """Tokens in the top ``percent`` % (:func:`pyattn.compare.similarity.top_k_count`
    of them) by attention only, by attribution only, and by both.

    Parameters
    ----------
    attribution : array-like, shape (N,), float
        Per-token attribution.
    attention : array-like, shape (N,), float
        Attention received per token.
    tokens : sequence of str, length N
    percent : float
        Size of each top set, in (0, 100]: ``ceil(percent % of N)`` tokens.
    attribution_as : {"magnitude", "signed"}
        ``"magnitude"`` ranks attributions by ``|attribution|`` (default, as the
        similarity metrics do), ``"signed"`` by the signed score.

    Returns
    -------
    table : pandas.DataFrame
        One row per position in either top set: ``set`` (``"attention only"``,
        ``"attribution only"``, ``"both"``), ``token``, ``raw_token``,
        ``position``, the min-max normalised attribution (as ranked) and
        attention, both ranks (1 = largest) and ``attribution_as``.
    counts : pandas.DataFrame
        ``set``, ``token``, ``count``: each token type per set.

    Raises
    ------
    ValueError
        If ``attribution_as`` is unknown or a vector's length is not N.

    Examples
    --------
    >>> tokens = ["<s>", "Ġcat", "Ġsat", "Ġcat", "</s>"]
    >>> table, counts = overlap_table([0.1, 2.0, -3.0, 0.5, 0.0], [0.1, 0.9, 0.2, 0.8, 0.0], tokens, percent=40)
    >>> table[["set", "token", "position"]].values.tolist()  # top 2 of 5: |-3.0| ranks first by magnitude
    [['attention only', 'cat', 3], ['attribution only', 'sat', 2], ['both', 'cat', 1]]
    """
    import pandas as pd
    from scipy import stats

    if attribution_as not in ("magnitude", "signed"):
        raise InputError(f'attribution_as must be "magnitude" or "signed", got {attribution_as!r}')
    a = _scores(attribution, tokens, "attribution")
    a = np.abs(a) if attribution_as == "magnitude" else a
    r = _scores(attention, tokens, "attention")
    top_a, top_r = set(top_positions(a, percent).tolist()), set(top_positions(r, percent).tolist())
    rank_a = len(a) + 1 - stats.rankdata(a, method="min")
    rank_r = len(r) + 1 - stats.rankdata(r, method="min")
    norm_a, norm_r = minmax(a), minmax(r)
    rows = []
    for name, positions in (("attention only", top_r - top_a), ("attribution only", top_a - top_r), ("both", top_a & top_r)):
        for i in sorted(positions):
            rows.append(
                {
                    "set": name,
                    "token": display_token(tokens[i]),
                    "raw_token": tokens[i],
                    "position": i,
                    "attribution_norm": norm_a[i],
                    "attention_norm": norm_r[i],
                    "attribution_rank": int(rank_a[i]),
                    "attention_rank": int(rank_r[i]),
                    "attribution_as": attribution_as,
                }
            )
    table = pd.DataFrame(rows, columns=["set", "token", "raw_token", "position", "attribution_norm", "attention_norm", "attribution_rank", "attention_rank", "attribution_as"])
    counts = table.groupby(["set", "token"]).size().rename("count").reset_index().sort_values(["set", "count", "token"], ascending=[True, False, True])
    return table, counts.reset_index(drop=True)


def token_type_totals(scores, tokens: Sequence[str], merge_forms: bool = False):
    """Per token type within one document: count and sum of scores, sorted by
    sum (largest first).

    Parameters
    ----------
    scores : array-like, shape (N,), float
        Per-token scores (attribution or attention received).
    tokens : sequence of str, length N
    merge_forms : bool
        ``False`` (default) groups by the raw token, with its display form
        beside it; ``True`` groups by the display form (``Ġcat`` and ``cat``
        together).

    Returns
    -------
    pandas.DataFrame
        Columns ``raw_token`` (or only ``token`` when ``merge_forms``),
        ``token``, ``count``, ``sum``; one row per type.

    Raises
    ------
    ValueError
        If ``scores`` does not have one value per token.

    Examples
    --------
    >>> tokens = ["<s>", "Ġcat", "Ġsat", "Ġcat", "</s>"]
    >>> token_type_totals([0.1, 2.0, -3.0, 0.5, 0.0], tokens).values.tolist()
    [['Ġcat', 'cat', 2, 2.5], ['<s>', '<s>', 1, 0.1], ['</s>', '</s>', 1, 0.0], ['Ġsat', 'sat', 1, -3.0]]
    """
    import pandas as pd

    values = _scores(scores, tokens)
    frame = pd.DataFrame({"raw_token": list(tokens), "token": [display_token(t) for t in tokens], "score": values})
    key = "token" if merge_forms else "raw_token"
    grouped = frame.groupby(key).agg(count=("score", "size"), sum=("score", "sum"))
    if not merge_forms:
        grouped.insert(0, "token", [display_token(t) for t in grouped.index])
    return grouped.sort_values("sum", ascending=False).reset_index()


def dataset_token_table(documents: Iterable[tuple[Sequence[str], object]], merge_forms: bool = False):
    """Per token type across documents, from ``(tokens, scores)`` pairs.

    Parameters
    ----------
    documents : iterable of (sequence of str, array-like of shape (N_i,))
        Each document's tokens and its per-token scores: tokens first, as in
        :func:`pyattn.compare.uncertainty.bootstrap_token_means` (a pair
        given as ``(scores, tokens)`` is refused with an ``InputError``).
    merge_forms : bool
        Group by the display form (``Ġcat`` and ``cat`` together) instead of
        the raw token.

    Returns
    -------
    pandas.DataFrame
        One row per type, sorted by ``sum`` (largest first, as the original's
        per-token table was), with columns ``raw_token`` (unless
        ``merge_forms``), ``token`` and

        - ``documents``: how many documents contain the type;
        - ``occurrences``: how many times it occurs;
        - ``sum``: total score;
        - ``mean_per_occurrence``: sum / occurrences;
        - ``mean_per_document``: sum / documents containing it;
        - ``mean_over_all_documents``: sum / number of documents in the dataset
          (what the original notebook called the mean).

    Raises
    ------
    ValueError
        (:class:`pyattn.errors.InputError`) If there are no documents, a
        pair is ``(scores, tokens)``, or a document's scores and tokens
        differ in length.

    Examples
    --------
    >>> table = dataset_token_table([(["Ġcat", "Ġsat"], [1.0, 2.0]), (["Ġcat", "Ġcat"], [0.5, 1.0])])
    >>> table[["token", "documents", "occurrences", "sum", "mean_per_occurrence", "mean_over_all_documents"]].values.tolist()
    [['cat', 2, 3, 2.5, 0.8333333333333334, 1.25], ['sat', 1, 1, 2.0, 2.0, 1.0]]
    """
    import pandas as pd

    frames = []
    for index, tokens, values in token_pairs(documents, "dataset_token_table"):
        frames.append(pd.DataFrame({"document": index, "raw_token": list(tokens), "token": [display_token(t) for t in tokens], "score": values}))
    if not frames:
        raise InputError("no documents to aggregate")
    frame = pd.concat(frames, ignore_index=True)
    key = "token" if merge_forms else "raw_token"
    grouped = frame.groupby(key).agg(documents=("document", "nunique"), occurrences=("score", "size"), sum=("score", "sum"))
    grouped["mean_per_occurrence"] = grouped["sum"] / grouped["occurrences"]
    grouped["mean_per_document"] = grouped["sum"] / grouped["documents"]
    grouped["mean_over_all_documents"] = grouped["sum"] / len(frames)
    if not merge_forms:
        grouped.insert(0, "token", [display_token(t) for t in grouped.index])
    return grouped.sort_values("sum", ascending=False).reset_index()


def export_table(table, path: str | os.PathLike) -> None:
    """Write a table to ``.csv`` or ``.parquet`` (pyarrow), chosen by the file's
    extension; the index is not written.

    Parameters
    ----------
    table : pandas.DataFrame
    path : str or os.PathLike
        Ends in ``.csv`` or ``.parquet``.

    Raises
    ------
    ValueError
        For any other extension.

    Examples
    --------
    >>> import os, tempfile
    >>> import pandas as pd
    >>> table = pd.DataFrame({"token": ["cat", "sat"], "sum": [2.5, -3.0]})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     export_table(table, os.path.join(folder, "tokens.parquet"))
    ...     pd.read_parquet(os.path.join(folder, "tokens.parquet")).equals(table)
    True
    """
    path = os.fspath(path)
    if path.endswith(".csv"):
        table.to_csv(path, index=False)
    elif path.endswith(".parquet"):
        table.to_parquet(path, index=False)
    else:
        raise InputError(f"unknown table format for {path!r}: use .csv or .parquet")
