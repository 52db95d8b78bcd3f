"""One order for the per-document pairs of the dataset functions: token
pairs are (tokens, scores) in dataset_token_table and bootstrap_token_means;
the head agreement map takes (attribution, attention). The other order is
refused with one InputError that names the order expected."""

from __future__ import annotations

import numpy as np
import pytest

from pyattn.compare.agreement import head_agreement
from pyattn.compare.tokens import dataset_token_table
from pyattn.compare.uncertainty import bootstrap_token_means
from pyattn.errors import InputError

DOCUMENTS = [(["Ġcat", "Ġsat"], [1.0, 2.0]), (np.array(["Ġcat", "Ġcat"]), np.array([0.5, 1.0]))]


@pytest.mark.parametrize("function", [dataset_token_table, lambda d: bootstrap_token_means(d, n_boot=20)])
def test_token_pairs_are_tokens_first(function):
    table = function(DOCUMENTS)
    assert list(table["token"].str.replace("Ġ", "")[:2]) == ["cat", "sat"]
    name = getattr(function, "__name__", "bootstrap_token_means").replace("<lambda>", "bootstrap_token_means")
    swapped = [(scores, tokens) for tokens, scores in DOCUMENTS]
    with pytest.raises(InputError, match=rf"^documents\[0\] is \(scores, tokens\): {name} takes \(tokens, scores\) pairs, tokens first$"):
        function(swapped)
    with pytest.raises(InputError, match=r"^document 1: got 2 tokens but 3 scores$"):
        function([DOCUMENTS[0], (["a", "b"], [1.0, 2.0, 3.0])])
    with pytest.raises(InputError, match=r"^documents\[0\] must be a pair \(tokens, scores\), got list of 3 items$"):
        function([["a", [1.0], "b"]])


def test_the_two_token_tables_agree():
    table = dataset_token_table(DOCUMENTS).set_index("raw_token")
    intervals = bootstrap_token_means(DOCUMENTS, n_boot=20).set_index("token")
    assert table.loc["Ġcat", "sum"] == intervals.loc["Ġcat", "sum"] == 2.5


def test_head_agreement_pairs_are_attribution_first():
    rng = np.random.default_rng(0)
    documents = [(rng.normal(size=20), rng.random((1, 2, 20))) for _ in range(2)]
    assert len(head_agreement(documents, n_perm=39, n_boot=20)) == 2
    with pytest.raises(InputError, match=r"^documents\[1\] is \(attention, attribution\): head_agreement takes \(attribution, attention\) pairs"):
        head_agreement([documents[0], documents[1][::-1]], n_perm=39, n_boot=20)
    with pytest.raises(InputError, match=r"^documents\[0\] is \(attention, attribution\)"):
        head_agreement([d[::-1] for d in documents], n_perm=39, n_boot=20)
