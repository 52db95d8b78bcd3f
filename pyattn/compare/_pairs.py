"""The per-document pairs the dataset functions of pyattn.compare take, read
in one place (private to the package).

Token pairs are ``(tokens, scores)``, tokens first, in
:func:`pyattn.compare.tokens.dataset_token_table` and
:func:`pyattn.compare.uncertainty.bootstrap_token_means`; the head agreement
map's pairs are ``(attribution, attention)``, attribution first, as in every
other comparison. A pair given in the other order is refused with one message
that names the order expected.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from pyattn.compare.metrics import as_vector
from pyattn.errors import InputError


def _is_text(values) -> bool:
    """Strings, or a sequence (list, numpy array, ...) whose first item is one."""
    if isinstance(values, str):
        return True
    try:
        first = next(iter(values))
    except (TypeError, StopIteration):
        return False
    return isinstance(first, str)


def _two(pair, index: int, expected: str):
    try:
        first, second = pair
    except (TypeError, ValueError):
        raise InputError(f"documents[{index}] must be a pair {expected}, got {type(pair).__name__}"
                         + (f" of {len(pair)} items" if hasattr(pair, "__len__") else "")) from None
    return first, second


def token_pairs(documents: Iterable[tuple[Sequence[str], object]], function: str) -> Iterator[tuple[int, Sequence[str], np.ndarray]]:
    """``(index, tokens, scores)`` of each ``(tokens, scores)`` pair, scores
    as a float64 vector with one value per token."""
    for index, pair in enumerate(documents):
        tokens, scores = _two(pair, index, "(tokens, scores)")
        if _is_text(scores) and not _is_text(tokens):
            raise InputError(f"documents[{index}] is (scores, tokens): {function} takes (tokens, scores) pairs, tokens first")
        if not _is_text(tokens) and len(tokens) > 0:
            raise TypeError(f"documents[{index}]: tokens must be strings (pairs are (tokens, scores)), got {type(tokens).__name__}")
        values = as_vector(scores, f"documents[{index}] scores")
        if len(values) != len(tokens):
            raise InputError(f"document {index}: got {len(tokens)} tokens but {len(values)} scores")
        yield index, tokens, values


def attribution_attention_pair(pair, index: int) -> tuple[object, object]:
    """``(attribution, attention)`` of one document of the head agreement
    map, refusing ``(attention, attribution)``."""
    attribution, attention = _two(pair, index, "(attribution, attention of shape (L, H, N))")
    if np.ndim(attribution) == 3 and np.ndim(attention) == 1:
        raise InputError(f"documents[{index}] is (attention, attribution): head_agreement takes (attribution, attention) pairs, "
                         "the attribution (N,) first and the attention (L, H, N) second")
    return attribution, attention
