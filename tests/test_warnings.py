"""Saying what happened: truncation once per call, non-convergence warned
and named, clear errors instead of NaN rows, and transformers' messages
about pyattn's own inputs silenced without touching the user's."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import pyattn
from pyattn.cli import main
from pyattn.demo import DOCS_CSV
from pyattn.explanation import NotConvergedWarning
from pyattn.models.inputs import TruncationWarning

from testing import tiny_classifier, tiny_tokenizer


@pytest.fixture(scope="module")
def demo():
    return pyattn.load_demo()


TEXT = "the borrow checker rejects the program because the lifetime of the reference ends before the loop"


def test_truncation_is_one_warning_per_explain_call(demo):
    model, tokenizer = demo
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pyattn.explain(model, tokenizer, TEXT, max_length=8, faithfulness=False, n_steps=16)
    truncations = [w for w in caught if issubclass(w.category, TruncationWarning)]
    full = len(tokenizer.tokenize(TEXT))
    assert len(truncations) == 1, [str(w.message) for w in truncations]
    assert result.attribution.truncated_tokens == full - 6
    assert f"{full - 6} tokens dropped" in str(truncations[0].message) and truncations[0].filename == __file__


def test_non_convergence_is_warned(demo):
    model, tokenizer = demo
    with pytest.warns(NotConvergedWarning, match="did not converge: completeness error"):
        result = pyattn.explain(model, tokenizer, TEXT, faithfulness=False, n_steps=2, method="trapezoid")
    assert not result.attribution.converged


def test_transformers_padding_message_is_silenced_only_inside_pyattn(demo, caplog):
    from transformers.utils import logging as hf_logging

    model, tokenizer = demo
    before = hf_logging.get_verbosity()

    def said() -> bool:
        return any("automatically padded" in record.getMessage() for record in caplog.records)

    logging.Logger.warning_once.cache_clear()  # transformers says it once per process: make it sayable again
    with caplog.at_level(logging.WARNING, logger="transformers"):
        pyattn.explain(model, tokenizer, TEXT, faithfulness=False, rollout=False, n_steps=16)
    assert not said()
    assert hf_logging.get_verbosity() == before  # restored
    # the user's own call to the model still gets transformers' message (the check above can fail)
    logging.Logger.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="transformers"), torch.no_grad():
        model(**tokenizer(TEXT, return_tensors="pt"))
    assert said()


def test_all_unknown_tokens_and_empty_masks_are_clear_errors():
    model, tokenizer = tiny_classifier("bert"), tiny_tokenizer("bert")
    with pytest.raises(ValueError, match=r"3 of the 3 tokens of the text are unknown to the tokenizer \(\[UNK\]\)"):
        pyattn.explain(model, tokenizer, "zzqx qqzx xqzz", faithfulness=False)
    model, tokenizer = pyattn.load_demo()
    with pytest.raises(ValueError, match=r"masks: mask 'alphabetic' leaves 0 of the document's \d+ tokens; comparing needs at least 2"):
        pyattn.explain(model, tokenizer, ". , .", masks=["alphabetic"], faithfulness=False)


def test_cli_summary_names_truncated_and_unconverged_documents(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["attribute", "--model", "demo", "--data", DOCS_CSV, "--id-column", "id", "--out", str(out),
                 "--max-length", "40", "--steps", "2", "--limit", "2"]) == 0
    printed = capsys.readouterr()
    records = pyattn.read_records(out)
    dropped = int(records["truncated_tokens"].sum())
    assert f"2 of the store's 2 documents were truncated to fit the model: {dropped:,} tokens dropped in all (paper-1, paper-2)" in printed.out
    failed = records[~records["converged"]]["doc_id"].tolist()
    assert failed, "two trapezoid nodes should leave some document above 1% completeness"
    assert "documents did not converge" in printed.out and ", ".join(failed) in printed.out
    assert "automatically padded" not in printed.err and "Loading weights" not in printed.err
