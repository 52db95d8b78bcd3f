"""The model zoo: every architecture of tests/zoo.py, tiny and seeded, from
Python (``explain``, ``attribute``, ``attention``) and from the CLI
(``attribute`` -> ``compare`` -> ``report``), each checked against the model
itself, never against pyattn:

- the attributions sum to the model's own F(input) - F(baseline) (F read from
  the config as transformers' loss reads it: softmax, the label's sigmoid,
  the raw regression output) within the completeness error pyattn reports;
- the outputs pyattn stores are the model's own outputs on those ids;
- decoder classifiers: F(baseline) is the model run on the baseline ids as a
  user runs it (input ids and attention mask only);
- attention received is the column sums of the model's own eager attention,
  and every used row of the attention pyattn reads sums to 1;
- what refuses, refuses with one line, and the README's table of supported
  models says exactly what this suite finds (tests/zoo_table.py writes it).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pyattn
from pyattn.models.inputs import encode, pools_last_non_pad
from zoo import LONG, N_STEPS, SHORT, ZOO, build, cell, cli_outcome, eager_attentions, model_output, python_outcome, readme_table, run_model

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore")


def tolerance(model) -> float:
    """Absolute tolerance of two runs of the same model on the same ids."""
    return 2e-2 if next(model.parameters()).dtype in (torch.bfloat16, torch.float16) else 2e-6


def own_outputs(model, document, ids) -> torch.Tensor:
    """F of every class, the model run on ``ids`` with the document's masks
    and position ids (its own forward; F from the config: zoo.model_output)."""
    kwargs = document.forward_kwargs(ids)
    with torch.no_grad():
        return model_output(model, model(**kwargs).logits)[0]


def check_attribution(model, tokenizer, text, result, require_gap: bool = True) -> None:
    document = encode(model, tokenizer, text)
    f_input = own_outputs(model, document, document.input_ids)
    f_baseline = own_outputs(model, document, document.baseline_ids)
    if pools_last_non_pad(model):  # as a user runs a decoder classifier: ids and a mask of ones, nothing else
        torch.testing.assert_close(model_output(model, run_model(model, document.input_ids))[0], f_input, atol=tolerance(model), rtol=0)
        torch.testing.assert_close(model_output(model, run_model(model, document.baseline_ids))[0], f_baseline, atol=tolerance(model), rtol=0)
    atol = tolerance(model)
    np.testing.assert_allclose(result.outputs, f_input.numpy(), atol=atol)
    assert result.output == {"softmax": "softmax", "multi_label_classification": "sigmoid", "regression": "raw"}[
        model.config.problem_type or ("regression" if model.config.num_labels == 1 else "softmax")]
    gap = float(f_input[result.target] - f_baseline[result.target])
    if require_gap:
        assert abs(gap) > 5 * atol, "the zoo's heads and embeddings are scaled so that the gap is testable"
    assert abs(result.scores.sum() - gap) <= abs(result.delta) + atol, (result.scores.sum(), gap, result.delta)
    assert result.output_gap == pytest.approx(gap, abs=atol)
    if result.output == "raw":
        with pytest.raises(ValueError, match="regression head"):
            result.probabilities


def check_attention(model, tokenizer, text, collected) -> None:
    document = encode(model, tokenizer, text)
    per_head = collected.received.per_layer[:, 0].double()  # (L, H, N)
    n = document.input_ids.shape[1]
    heads = model.config.num_attention_heads
    if model.config.model_type == "longformer":
        # every token's attention is a distribution: each head's received mass is N
        torch.testing.assert_close(per_head.sum(-1), torch.full(per_head.shape[:2], float(n), dtype=torch.float64), atol=1e-4, rtol=0)
        return
    reference = eager_attentions(model, document.input_ids)
    assert len(reference) == per_head.shape[0] and reference[0].shape == (1, heads, n, n)
    for layer, probabilities in enumerate(reference):
        probabilities = probabilities[0].double()  # (H, N, N)
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(heads, n, dtype=torch.float64), atol=tolerance(model), rtol=0)
        torch.testing.assert_close(per_head[layer], probabilities.sum(-2), atol=tolerance(model) * n, rtol=0)
    # what pyattn read, where it read probabilities (the eager route): one
    # distribution per row (the q/k route reads no probabilities; its rows are
    # checked in tests/models/test_qk_route.py and tests/kernels/test_qk_op.py)
    for returned in collected.attentions or ():
        torch.testing.assert_close(returned[0].double().sum(-1), torch.ones(heads, n, dtype=torch.float64), atol=tolerance(model), rtol=0)


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


@pytest.mark.parametrize("name", list(ZOO))
def test_python(name):
    """attribute and attention against the model itself; explain agrees or
    refuses with the same line; the README's Python cells say the same."""
    model, tokenizer = build(name)
    found = {}
    try:
        result = pyattn.attribute(model, tokenizer, LONG, n_steps=N_STEPS, device="cpu")
    except ValueError as error:
        found["Python attribution"] = cell(one_line(error))
    else:
        check_attribution(model, tokenizer, LONG, result)
        found["Python attribution"] = "works"
    try:
        collected = pyattn.attention(model, tokenizer, LONG, per_head=True)
    except ValueError as error:
        found["Python attention"] = cell(one_line(error))
    else:
        check_attention(model, tokenizer, LONG, collected)
        found["Python attention"] = "works"
    if found == {"Python attribution": "works", "Python attention": "works"}:
        explanation = pyattn.explain(model, tokenizer, SHORT, n_steps=5, faithfulness=False, device="cpu")
        check_attribution(model, tokenizer, SHORT, explanation.attribution, require_gap=False)
        check_attention(model, tokenizer, SHORT, pyattn.attention(model, tokenizer, SHORT, per_head=True))
        np.testing.assert_allclose(explanation.per_head, pyattn.attention(model, tokenizer, SHORT, per_head=True).received.per_layer[:, 0].numpy(), atol=1e-6)
        assert explanation.facts()["explained output F"].split()[0] in ("softmax", "sigmoid", "raw")
    else:
        with pytest.raises(ValueError) as refused:
            pyattn.explain(model, tokenizer, SHORT, n_steps=5, faithfulness=False, device="cpu")
        assert cell(one_line(refused.value)) in found.values()
    table = readme_table(README)
    assert {column: table[name][column] for column in found} == found


def test_block_sparse_refused_at_every_length():
    """BigBird block_sparse: padded to its block (shape) or not (rows ~0.8):
    refused either way, and the model keeps its attention type."""
    model, tokenizer = build("BigBird block_sparse")
    for words in (5, 19, 38):  # 7 tokens: transformers would switch to original_full; 21: padded to 22; 40: rows sum to ~0.8
        text = " ".join((LONG + " " + LONG).split()[:words])
        with pytest.raises(ValueError, match="not a distribution per token.*original_full"):
            pyattn.attention(model, tokenizer, text)
        assert model.config.attention_type == "block_sparse"


def test_row_check_refuses_what_block_sparse_returns():
    """The generic check, in the pass that reads attention, without the
    up-front refusal: block_sparse's own output at 40 tokens (a multiple of
    its block: the shape fits) has rows summing to about 0.8, refused; at 21
    tokens (padded to 22) the shape is refused."""
    from pyattn.model_attention import NotADistribution, check_full_rows

    model, tokenizer = build("BigBird block_sparse")
    for words, match in ((38, r"sums to 0\.[0-9]+, not 1"), (19, r"has shape \(1, 4, 22, 22\)")):
        ids = encode(model, tokenizer, " ".join((LONG + " " + LONG).split()[:words])).input_ids
        with torch.no_grad():
            attentions = model(input_ids=ids, output_attentions=True).attentions
        sums = attentions[0][0].sum(-1)[:, : ids.shape[1]]
        with pytest.raises(NotADistribution, match=match):
            check_full_rows(model, 0, attentions[0], ids.shape[1], torch.ones_like(ids))
        if words == 38:
            assert float((sums - 1).abs().max()) > 0.05  # the model's own rows: not distributions


def test_several_global_tokens_per_layer_windows():
    """Longformer with per-layer windows and three global tokens: every row a
    distribution (each head receives N in all), checked against the model's
    own band and global attentions."""
    from pyattn.model_attention import attention_from_inputs

    model, tokenizer = build("Longformer")
    document = encode(model, tokenizer, LONG)
    global_mask = torch.zeros_like(document.input_ids)
    global_mask[0, [0, 3, 10]] = 1
    collected = attention_from_inputs(model, document.input_ids, document.attention_mask, global_mask, per_head=True)
    n = document.input_ids.shape[1]
    torch.testing.assert_close(collected.received.per_layer.sum(-1).double(), torch.full((2, 1, 4), float(n), dtype=torch.float64), atol=1e-4, rtol=0)
    for layer in range(2):
        dense = collected.dense(layer)[0].double()  # (H, N, N), from the model's band and global attention
        torch.testing.assert_close(dense.sum(-1), torch.ones(4, n, dtype=torch.float64), atol=1e-5, rtol=0)
        torch.testing.assert_close(collected.received.per_layer[layer, 0].double(), dense.sum(-2), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("name", list(ZOO))
def test_cli(name, tmp_path):
    """The CLI on a saved model: stored outputs are the model's own on the
    stored ids, scores sum to its own gap within the stored error, stored
    attention is the column sums of its eager attention; or one line; the
    README's CLI cells say the same."""
    from pyattn.pipeline import stored_attention
    from pyattn.pipeline.store import ResultsStore

    report = True  # attribute -> compare -> report for every architecture
    found, out = cli_outcome(name, tmp_path, report=report)
    if found["CLI attribution"] == "works":
        from transformers import AutoTokenizer

        model, _ = build(name)
        tokenizer = AutoTokenizer.from_pretrained(out.parent / "model")  # as the CLI loaded it
        records = ResultsStore.open(str(out)).records().set_index("doc_id")
        for doc, text in (("a", SHORT), ("b", LONG)):
            record = records.loc[doc]
            document = encode(model, tokenizer, text)
            assert list(record["input_ids"]) == document.input_ids[0].tolist()
            f_input = own_outputs(model, document, document.input_ids)
            f_baseline = own_outputs(model, document, document.baseline_ids)
            np.testing.assert_allclose(np.asarray(record["outputs"]), f_input.numpy(), atol=tolerance(model))
            gap = float(f_input[record["target"]] - f_baseline[record["target"]])
            assert abs(np.sum(record["scores"]) - gap) <= abs(record["delta"]) + tolerance(model)
            assert record["output"] == pyattn.attribute(model, tokenizer, text, n_steps=2, device="cpu").output
            if model.config.model_type != "longformer":
                reference = eager_attentions(model, document.input_ids)
                expected = torch.stack([a[0].sum(-2) for a in reference]).double().numpy()  # (L, H, N)
                np.testing.assert_allclose(stored_attention(record), expected, atol=tolerance(model) * len(text.split()))
        if report:
            assert (out / "reports" / "index.html").exists()
    table = readme_table(README)
    assert {column: table[name][column] for column in found} == found


@pytest.mark.parametrize("name, kind", [("BERT multi-label", "sigmoid"), ("BERT regression", "raw"), ("DistilBERT", "softmax")])
def test_attention_results_name_the_heads_own_output(name, kind):
    """pyattn.attention's outputs are the head's own F, checked against the
    model run by hand: a sigmoid per label, the raw output, or the softmax;
    probabilities are refused for a regression head."""
    from zoo import build

    model, tokenizer = build(name)
    model.eval()  # pyattn reads the model in eval mode (and puts its mode back)
    text = "the parser reads the grammar"
    collected = pyattn.attention(model, tokenizer, text)
    document = encode(model, tokenizer, text)  # the ids pyattn runs (special tokens added)
    with torch.no_grad():
        logits = model(input_ids=document.input_ids, attention_mask=document.attention_mask).logits.float()
    own = {"sigmoid": logits.sigmoid(), "raw": logits, "softmax": logits.softmax(-1)}[kind]
    assert collected.output == kind
    torch.testing.assert_close(collected.outputs, own, atol=1e-5, rtol=1e-5)
    if kind == "raw":
        with pytest.raises(ValueError, match="regression head: its outputs are raw values"):
            collected.probabilities
    else:
        torch.testing.assert_close(collected.probabilities, own, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["Llama", "GPT-2"])
def test_faithfulness_masking_keeps_a_decoders_pooled_position(name):
    """mode="mask" on a decoder classifier whose pad is its eos: masked
    tokens get a special token that is not the pad, so the model reads the
    same position as on the document; the comprehensiveness pyattn reports
    is the model's own F(document) - F(masked ids), run by hand."""
    from zoo import build

    from pyattn.compare.faithfulness import _variant, faithfulness
    from pyattn.models.inputs import model_output, output_kind, pooled_position, pooling_fill

    model, tokenizer = build(name)
    pad = model.config.pad_token_id
    text = "the parser reads the grammar of the language"
    document = encode(model, tokenizer, text)
    n = document.input_ids.shape[1]
    ranking = np.arange(n, dtype=float)  # the last tokens first: masking them is what could move the pooled position
    per_k, aopc = faithfulness(model, tokenizer, text, {"late": ranking}, mode="mask", random_rankings=0, percents=(50,))
    fill = pooling_fill(model, tokenizer)
    assert fill != pad
    removed = int(per_k.iloc[0]["removed"])
    keep = np.ones(n - 2, bool)
    keep[n - 2 - removed :] = False  # the top of the ranking: the last text tokens
    variant = _variant(document, keep, "mask", fill)
    assert pooled_position(variant, pad) == pooled_position(document.input_ids[0].tolist(), pad)
    kind = output_kind(model)
    with torch.no_grad():
        full = model_output(model(input_ids=document.input_ids).logits, kind)[0]
        masked = model_output(model(input_ids=torch.tensor([variant])).logits, kind)[0]
    target = int(aopc.iloc[0]["target"])
    assert per_k.iloc[0]["comprehensiveness"] == pytest.approx(float(full[target] - masked[target]), abs=1e-5)
    assert aopc.iloc[0]["output"] == pytest.approx(float(full[target]), abs=1e-6) and aopc.iloc[0]["output_kind"] == kind
