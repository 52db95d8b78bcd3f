"""Token tables, checked by hand-worked examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pyattn.compare.similarity import top_k_count
from pyattn.compare.tokens import dataset_token_table, export_table, opposing_tokens, overlap_table, supporting_tokens, token_type_totals, top_tokens

TOKENS = ["<s>", "compiler", "Ġthe", "Ġcompiler", "Ġtypes", "Ġthe", "Ġneural", "</s>"]
SCORES = np.array([0.0, 0.5, -0.1, 0.3, 0.9, 0.2, -0.7, 0.0])


def test_top_tokens_name_their_convention():
    top = top_tokens(SCORES, TOKENS, k=3)
    assert top["token"].tolist() == ["types", "compiler", "compiler"]
    assert top["raw_token"].tolist() == ["Ġtypes", "compiler", "Ġcompiler"]
    assert top["position"].tolist() == [4, 1, 3] and top["rank"].tolist() == [1, 2, 3]
    assert set(top["by"]) == {"signed"}
    # By magnitude, the strongly opposing "neural" (-0.7) ranks second.
    by_magnitude = top_tokens(SCORES, TOKENS, k=3, by="magnitude")
    assert by_magnitude["position"].tolist() == [4, 6, 1] and set(by_magnitude["by"]) == {"magnitude"}
    assert by_magnitude["score"].tolist() == [0.9, -0.7, 0.5]  # the score itself stays signed
    with pytest.raises(ValueError, match="got 8 tokens but values of shape"):
        top_tokens(SCORES[:5], TOKENS)
    with pytest.raises(TypeError, match="values first and tokens second"):
        top_tokens(TOKENS, SCORES)
    with pytest.raises(ValueError, match='by must be "signed" or "magnitude"'):
        top_tokens(SCORES, TOKENS, by="abs")
    with pytest.raises(ValueError, match="k must be a positive number"):
        top_tokens(SCORES, TOKENS, k=0)


def test_supporting_and_opposing_tokens_split_by_sign():
    supporting = supporting_tokens(SCORES, TOKENS, k=10)
    # Only the positive scores, largest first: fewer than k when fewer are positive.
    assert supporting["score"].tolist() == [0.9, 0.5, 0.3, 0.2] and set(supporting["by"]) == {"supporting"}
    opposing = opposing_tokens(SCORES, TOKENS, k=10)
    assert opposing["token"].tolist() == ["neural", "the"] and opposing["score"].tolist() == [-0.7, -0.1]
    assert set(opposing["by"]) == {"opposing"}
    assert opposing_tokens(SCORES, TOKENS, k=1)["position"].tolist() == [6]


def test_type_totals_with_and_without_merging():
    raw = token_type_totals(SCORES, TOKENS)
    the = raw[raw.raw_token == "Ġthe"].iloc[0]
    assert the["count"] == 2 and the["sum"] == pytest.approx(0.1) and the["token"] == "the"
    assert set(raw.raw_token) >= {"compiler", "Ġcompiler"}  # two forms kept apart
    merged = token_type_totals(SCORES, TOKENS, merge_forms=True)
    compiler = merged[merged.token == "compiler"].iloc[0]
    assert compiler["count"] == 2 and compiler["sum"] == pytest.approx(0.8)
    assert merged["sum"].is_monotonic_decreasing


def test_overlap_table():
    attention = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.1, 0.05, 0.7])
    # top 25% of 8 = 2 positions: attribution |.| -> 4 (0.9), 6 (0.7); attention -> 0, 3
    table, counts = overlap_table(SCORES, attention, TOKENS, percent=25)
    assert table.set_index("position")["set"].to_dict() == {0: "attention only", 3: "attention only", 4: "attribution only", 6: "attribution only"}
    row = table[table.position == 6].iloc[0]
    assert row["attribution_rank"] == 2 and row["attribution_norm"] == pytest.approx(0.7 / 0.9)
    both, _ = overlap_table(SCORES, np.abs(SCORES), TOKENS, percent=25)
    assert set(both["set"]) == {"both"}
    assert counts["count"].sum() == len(table)
    assert set(table["attribution_as"]) == {"magnitude"}
    # Signed: "neural" (-0.7) leaves the attribution top set, "compiler" (0.5) enters.
    signed, _ = overlap_table(SCORES, attention, TOKENS, percent=25, attribution_as="signed")
    assert signed[signed["set"] != "attention only"]["position"].tolist() == [1, 4]


@pytest.mark.parametrize("percent", list(range(1, 101)) + [0.5, 2.5, 12.5, 33.3])
def test_top_k_count_is_the_exact_ceiling(percent):
    from fractions import Fraction
    import math

    exact = Fraction(str(percent))
    for n in list(range(1, 130)) + [200, 300, 700, 1100, 4096]:
        assert top_k_count(percent, n) == max(1, math.ceil(exact * n / 100)), (percent, n)


def test_top_k_count_refuses_nonsense():
    for bad in (0, -5, 101, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="percent must be in"):
            top_k_count(bad, 10)
    with pytest.raises(TypeError):
        top_k_count("5", 10)


def test_dataset_table_and_export(tmp_path):
    documents = [(TOKENS, SCORES), (["<s>", "Ġtypes", "Ġtypes", "</s>"], np.array([0.0, 0.4, 0.2, 0.0]))]
    table = dataset_token_table(documents)
    types = table[table.raw_token == "Ġtypes"].iloc[0]
    assert types["documents"] == 2 and types["occurrences"] == 3 and types["sum"] == pytest.approx(1.5)
    assert types["mean_per_occurrence"] == pytest.approx(0.5)
    assert types["mean_per_document"] == pytest.approx(0.75)
    assert types["mean_over_all_documents"] == pytest.approx(0.75)
    neural = table[table.raw_token == "Ġneural"].iloc[0]
    assert neural["mean_per_document"] == pytest.approx(-0.7) and neural["mean_over_all_documents"] == pytest.approx(-0.35)
    assert table["sum"].is_monotonic_decreasing
    for name in ("tokens.csv", "tokens.parquet"):
        export_table(table, tmp_path / name)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "tokens.parquet"), table)
    assert pd.read_csv(tmp_path / "tokens.csv")["sum"].tolist() == pytest.approx(table["sum"].tolist())
    with pytest.raises(ValueError, match="use .csv or .parquet"):
        export_table(table, tmp_path / "tokens.xlsx")
