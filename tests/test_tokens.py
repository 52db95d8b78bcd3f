"""Token tables, checked by hand-worked examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pyattn.tokens import bottom_tokens, dataset_token_table, export_table, overlap_table, token_type_totals, top_tokens

TOKENS = ["<s>", "compiler", "Ġthe", "Ġcompiler", "Ġtypes", "Ġthe", "Ġneural", "</s>"]
SCORES = np.array([0.0, 0.5, -0.1, 0.3, 0.9, 0.2, -0.7, 0.0])


def test_top_and_bottom():
    top = top_tokens(TOKENS, SCORES, k=3)
    assert top["token"].tolist() == ["types", "compiler", "compiler"]
    assert top["raw_token"].tolist() == ["Ġtypes", "compiler", "Ġcompiler"]
    assert top["position"].tolist() == [4, 1, 3] and top["rank"].tolist() == [1, 2, 3]
    bottom = bottom_tokens(TOKENS, SCORES, k=2)
    assert bottom["token"].tolist() == ["neural", "the"] and bottom["score"].tolist() == [-0.7, -0.1]
    with pytest.raises(ValueError, match="got 8 tokens but scores of shape"):
        top_tokens(TOKENS, SCORES[:5])


def test_type_totals_with_and_without_merging():
    raw = token_type_totals(TOKENS, SCORES)
    the = raw[raw.raw_token == "Ġthe"].iloc[0]
    assert the["count"] == 2 and the["sum"] == pytest.approx(0.1) and the["token"] == "the"
    assert set(raw.raw_token) >= {"compiler", "Ġcompiler"}  # two forms kept apart
    merged = token_type_totals(TOKENS, SCORES, merge_forms=True)
    compiler = merged[merged.token == "compiler"].iloc[0]
    assert compiler["count"] == 2 and compiler["sum"] == pytest.approx(0.8)
    assert merged["sum"].is_monotonic_decreasing


def test_overlap_table():
    attention = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.1, 0.05, 0.7])
    # top 25% of 8 = 2 positions: attribution |.| -> 4 (0.9), 6 (0.7); attention -> 0, 3
    table, counts = overlap_table(TOKENS, SCORES, attention, percent=25)
    assert table.set_index("position")["set"].to_dict() == {0: "attention only", 3: "attention only", 4: "attribution only", 6: "attribution only"}
    row = table[table.position == 6].iloc[0]
    assert row["attribution_rank"] == 2 and row["attribution_norm"] == pytest.approx(0.7 / 0.9)
    both, _ = overlap_table(TOKENS, SCORES, np.abs(SCORES), percent=25)
    assert set(both["set"]) == {"both"}
    assert counts["count"].sum() == len(table)


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
