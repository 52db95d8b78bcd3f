"""Every input a user brings gets a clear answer (issue 10).

Each case runs the ``pyattn`` command (in-process through ``pyattn.cli.main``
where it can, as a subprocess where a signal or a second process is the
point) and checks four things: the exit status, a message of one or two lines
that names the problem, no traceback, and what is on disk afterwards (every
document in the store exactly once, nothing created outside ``--out``, no
store left behind by a refused run, the user's own files untouched).

The models are tiny BERT, RoBERTa and Longformer classifiers built here from
seeded configs and saved with word-level tokenizers (no download).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer
from pyattn.cli import main
from pyattn.pipeline.store import ResultsStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_DOCS = 3
FAST = ["--steps", "4", "--device", "cpu", "--quiet"]


# ------------------------------------------------------------------ fixtures
def _save(model, folder, tokenizer_style=None):
    model.save_pretrained(folder)
    if tokenizer_style:
        tiny_tokenizer(tokenizer_style).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Saved tiny models, good and bad, by name."""
    from transformers import AutoModel, BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("models")
    saved = {}
    bert = tiny_classifier("bert")
    bert.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    bert.config.label2id = {v: k for k, v in bert.config.id2label.items()}
    saved["bert"] = _save(bert, root / "bert", "bert")
    saved["roberta"] = _save(tiny_classifier("roberta"), root / "roberta", "roberta")
    saved["longformer"] = _save(tiny_longformer(), root / "longformer", "roberta")
    base = AutoModel.from_config(tiny_classifier("bert").config)
    saved["no_head"] = _save(base, root / "no_head", "bert")
    saved["regression"] = _save(tiny_classifier("bert", num_labels=1), root / "regression", "bert")
    saved["no_tokenizer"] = _save(tiny_classifier("bert"), root / "no_tokenizer")
    torch.manual_seed(0)
    small = BertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=64, num_labels=3, max_position_embeddings=128, pad_token_id=0)).eval()
    saved["vocab_mismatch"] = _save(small, root / "vocab_mismatch", "bert")
    truncated = shutil.copytree(saved["bert"], root / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    saved["truncated"] = str(truncated)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {root}/PWNED",))

    for name, payload in (("pickled", {"x": Evil()}), ("garbage_bin", None)):
        folder = shutil.copytree(saved["bert"], root / name)
        os.remove(folder / "model.safetensors")
        if payload is None:
            (folder / "pytorch_model.bin").write_bytes(b"\x00not a checkpoint" * 10)
        else:
            torch.save(payload, folder / "pytorch_model.bin")
        saved[name] = str(folder)
    no_config = shutil.copytree(saved["bert"], root / "no_config")
    os.remove(no_config / "config.json")
    saved["no_config"] = str(no_config)
    no_weights = shutil.copytree(saved["bert"], root / "no_weights")
    os.remove(no_weights / "model.safetensors")
    saved["no_weights"] = str(no_weights)
    saved["root"] = str(root)
    return saved


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A good CSV of three short documents, ids d0..d2, labels 0..2."""
    path = tmp_path_factory.mktemp("data") / "docs.csv"
    pd.DataFrame({"doc": [f"d{i}" for i in range(N_DOCS)], "text": [sample_text(12 + 4 * i, seed=i) for i in range(N_DOCS)],
                  "label": [0, 1, 2]}).to_csv(path, index=False)
    return str(path)


def write_csv(folder, rows, name="bad.csv"):
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes."""
    files = {}
    for base, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(base, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, folder)] = f.read()
    return files


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_clear_line(err: str, *fragments: str, status_line: str = "pyattn") -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert 1 <= len(lines) <= 2, f"expected one or two lines, got {len(lines)}:\n{err}"
    assert lines[0].startswith(status_line), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def assert_store_once(out, ids) -> ResultsStore:
    store = ResultsStore.open(str(out))
    records = store.records()
    assert sorted(records["doc_id"]) == sorted(ids), "every document exactly once"
    assert not [n for n in os.listdir(store.shard_dir) if n.endswith(".tmp")]
    return store


# ------------------------------------------- 1. any HF classifier from the CLI
@pytest.mark.parametrize("kind", ["bert", "roberta", "longformer"])
def test_any_classifier_runs_from_the_cli(kind, models, data, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models[kind], "--data", data, "--out", out, "--id-column", "doc", *FAST)
    assert code == 0, err
    assert "Traceback" not in err
    store = assert_store_once(out, [f"d{i}" for i in range(N_DOCS)])
    records = store.records()
    from pyattn.pipeline import stored_attention

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(models[kind])
    for _, row in records.iterrows():
        per_head = stored_attention(row)
        assert per_head.shape == (config.num_hidden_layers, config.num_attention_heads, len(row["tokens"]))
        # every row of every head's attention sums to 1, so the column sums
        # (attention received) of one head sum to the number of tokens
        np.testing.assert_allclose(per_head.sum(-1), len(row["tokens"]), rtol=1e-4)
        assert row["predicted_label_name"] == config.id2label[row["predicted_label"]]
        assert row["label_name"] == config.id2label[row["label"]]


# ------------------------------------ 2. models that cannot be explained as asked
BAD_MODELS = [
    ("no_head", [], "no trained classification head"),
    ("regression", [], "regression head, whose labels are not classes"),  # without labels it runs: tests/test_model_zoo.py
    ("no_tokenizer", [], "has no tokenizer files"),
    ("vocab_mismatch", [], "do not belong together"),
    ("truncated", [], "cannot load model"),
    ("pickled", [], "pickle that holds more than tensors"),
    ("garbage_bin", [], "cannot load model"),
    ("no_config", [], "has no config.json"),
    ("no_weights", [], "has no weights"),
    ("bert", ["--tokenizer", "{no_tokenizer}"], "--tokenizer '{no_tokenizer}' is a folder with no tokenizer files"),
    ("demo", ["--tokenizer", "{bert}"], "cannot be used with --model 'demo'"),
    ("{root}/does-not-exist", [], "does not exist"),
]


@pytest.mark.parametrize("name,extra,message", BAD_MODELS, ids=[f"{m[0].split('/')[-1]}{'-' + m[1][0] if m[1] else ''}" for m in BAD_MODELS])
def test_models_that_cannot_be_explained_are_refused(name, extra, message, models, data, tmp_path, capsys):
    model = models.get(name, name.format(**models))
    extra = [e.format(**models) for e in extra]
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", model, "--data", data, "--out", out, *extra, *FAST)
    assert code == 2
    assert_one_clear_line(err, message.format(**models))
    assert not out.exists(), "a refused run leaves no store"
    assert not os.path.exists(os.path.join(models["root"], "PWNED")), "pickled code ran"
    assert "weights_only=False" not in err


# ------------------------------------------- 3. labels and ids never changed
BAD_ROWS = [
    ({"label": ["0", "1.5", "2"]}, "row 1 (id 'd1'): label '1.5'", "not a whole number"),
    ({"label": ["0", "7", "2"]}, "row 1 (id 'd1'): label 7 is out of range", "3 classes"),
    ({"label": ["0", "1", "-1"]}, "row 2 (id 'd2'): label -1 is out of range", "0..2"),
    ({"label": ["0", "happy", "2"]}, "row 1 (id 'd1'): label 'happy'", "class names"),
    ({"label": ["0", "", "2"]}, "row 1 (id 'd1'): no label in column 'label'", "--label-column ''"),
    ({"label": ["0", "NaN", "2"]}, "row 1 (id 'd1'): label 'NaN'", "not a whole number"),
    ({"label": ["0", "inf", "2"]}, "row 1 (id 'd1'): label 'inf'", "not a whole number"),
    ({"doc": ["d0", "", "d2"]}, "row 1: no id in column 'doc'", "every row needs one"),
    ({"doc": ["d0", "d0", "d2"]}, "not unique", "'d0' on rows 0 and 1"),
]


@pytest.mark.parametrize("change,where,message", BAD_ROWS, ids=["fractional", "too-large", "negative", "unknown-name", "missing-label",
                                                                 "nan-label", "inf-label", "missing-id", "duplicate-id"])
def test_bad_labels_and_ids_are_refused_with_the_row(change, where, message, models, tmp_path, capsys):
    rows = {"doc": ["d0", "d1", "d2"], "text": [sample_text(8, seed=i) for i in range(3)], "label": ["0", "1", "2"], **change}
    path = write_csv(tmp_path, rows)
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", path, "--out", out, "--id-column", "doc", *FAST)
    assert code == 2
    assert_one_clear_line(err, where, message)
    assert not out.exists()


def test_jsonl_boolean_label_is_refused(models, tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": sample_text(6, seed=i), "label": value}) for i, value in enumerate([0, True])))
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", path, "--out", tmp_path / "out", *FAST)
    assert code == 2
    assert_one_clear_line(err, "row 1", "is a boolean")
    assert not (tmp_path / "out").exists()


def test_values_are_kept_as_written(models, tmp_path, capsys):
    """String labels go through the model's label2id; ids keep leading zeros;
    a text reading "NA" stays a text (here a word the tiny vocabulary does not
    know, so it is skipped for that reason, not as a missing text); the label
    column may be left out."""
    rows = {"doc": ["007", "08", "NA", "009"], "text": [f"NA {sample_text(3, seed=3)}", sample_text(6, seed=1), sample_text(7, seed=2), "NA"],
            "label": ["positive", "0", "neutral", "0"]}
    path = write_csv(tmp_path, rows)
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", path, "--out", out, "--id-column", "doc", *FAST)
    assert code == 0, err
    records = assert_store_once(out, ["007", "08", "NA"]).records().set_index("doc_id")
    assert records.loc["007", "label"] == 2 and records.loc["007", "label_name"] == "positive"
    assert records.loc["08", "label"] == 0 and records.loc["NA", "label"] == 1
    assert list(records.loc["007", "tokens"])[1] == "[UNK]"  # "NA" was attributed as the text it is
    skipped = {e["doc_id"]: e["reason"] for e in ResultsStore.open(str(out)).skipped()}
    assert "009" not in records.index and "unknown to the tokenizer" in skipped["009"]  # skipped, saying why: "NA" is a text, not a missing one
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", path, "--out", tmp_path / "out2", "--label-column", "", *FAST)
    assert code == 0, err
    assert ResultsStore.open(str(tmp_path / "out2")).records()["label"].isna().all()


# --------------------------------------------------- 4. every flag range-checked
FLAG_CASES = [
    (["--steps", "0"], "--steps must be"),
    (["--steps", "-1"], "--steps must be"),
    (["--steps", "1.5"], "--steps must be"),
    (["--steps", "many"], "--steps must be"),
    (["--steps", "100000"], "1..4096"),
    (["--tol", "0"], "--tol must be a finite number in (0, 1)"),
    (["--tol", "-0.1"], "--tol must be a finite number"),
    (["--tol", "nan"], "--tol must be a finite number"),
    (["--tol", "inf"], "--tol must be a finite number"),
    (["--tol", "1.5"], "--tol must be a finite number"),
    (["--tol", "x"], "--tol must be a number"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--limit", "-3"], "--limit must be at least 1"),
    (["--max-length", "2"], "--max-length must be at least 3"),
    (["--max-length", "0"], "--max-length must be at least 3"),
    (["--max-length", "100000"], "--max-length 100000 is over the model's limit"),
    (["--target", "-1"], "--target must be at least 0"),
    (["--target", "3"], "--target 3 does not exist: the model has 3 classes, 0..2"),
    (["--target", "99"], "--target 99 does not exist"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--shard-size", "0"], "--shard-size must be at least 1"),
    (["--memory-budget", "abc"], "--memory-budget must be a positive number of bytes or a size such as \"6GB\""),
    (["--memory-budget", "0"], "--memory-budget must be a positive number of bytes"),
    (["--memory-budget=-5GB"], "--memory-budget must be a positive number of bytes"),
    (["--memory-budget", "6 parsecs"], "got '6 parsecs'"),
    (["--flush-seconds", "0"], "--flush-seconds must be a finite number"),
    (["--flush-seconds", "nan"], "--flush-seconds must be a finite number"),
    (["--flush-seconds", "-5"], "--flush-seconds must be a finite number"),
    (["--num-workers", "0", "--engine", "ray"], "--num-workers must be 1..1024"),
    (["--num-workers", "3"], "--num-workers only apply with --engine ray"),
    (["--address", "auto"], "--address only apply with --engine ray"),
    (["--gpus-per-worker", "-1", "--engine", "ray"], "--gpus-per-worker must be a finite number"),
    (["--gpus-per-worker", "nan", "--engine", "ray"], "--gpus-per-worker must be a finite number"),
    (["--device", "banana"], "--device 'banana' is not a device"),
    (["--device", "cuda:99"], "--device 'cuda:99' does not exist"),
    (["--device", "tpu"], "not a device"),
    (["--engine", "spark"], "invalid choice: 'spark'"),
]


@pytest.mark.parametrize("flags,message", FLAG_CASES, ids=[" ".join(f[0]) for f in FLAG_CASES])
def test_attribute_flags_are_checked_before_any_work(flags, message, models, data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["attribute", "--model", models["bert"], "--data", data, "--out", out, "--quiet"]
    code, _, err = run(capsys, *argv, *flags)
    assert code == 2
    assert_one_clear_line(err, message)
    assert not out.exists()


@pytest.fixture(scope="module")
def store(models, data, tmp_path_factory):
    """A finished store of the tiny BERT (2 layers x 4 heads)."""
    out = tmp_path_factory.mktemp("store") / "results"
    assert main(["attribute", "--model", models["bert"], "--data", data, "--out", str(out), "--id-column", "doc", *FAST]) == 0
    return str(out)


@pytest.mark.parametrize("layers,message", [
    ("7-3", "layer 7 does not exist; the model has 2 layers, 0..1"),
    ("1-0", "is empty: its first layer (1) comes after its last (0)"),
    ("1-99", "layer 99 does not exist"),
    ("2", "layer 2 does not exist"),
    ("-3", "layer -3 does not exist"),
    ("a-b", "is not a layer or range"),
    ("1-", "is not a layer or range"),
    ("0--1-", "is not a layer or range"),
    ("-3--1", "layer -3 does not exist"),
])
def test_compare_layer_ranges_are_checked(layers, message, store, capsys):
    before = snapshot(store)
    code, _, err = run(capsys, "compare", "--results", store, f"--layers={layers}", "--quiet")
    assert code == 2
    assert_one_clear_line(err, f"--layers {layers!r}" if "," not in layers else "--layers", message)
    assert snapshot(store) == before, "a refused compare writes nothing"


@pytest.mark.parametrize("layers,names", [("0", ["0-0"]), ("1--1", ["1-1"]), ("-2--1", ["0-1"]), ("0-1,1", ["0-1", "1-1"])])
def test_compare_layer_ranges_from_zero_and_from_the_end(layers, names, store, tmp_path, capsys):
    copy = shutil.copytree(store, tmp_path / "copy")
    code, out, err = run(capsys, "compare", "--results", copy, f"--layers={layers}", "--quiet")
    assert code == 0, err
    metrics = pd.read_parquet(copy / "metrics.parquet")
    assert set(names) <= set(metrics["attention"])
    # a range's attention is the sum of its layers' attention, from the store's own per-layer vectors
    from pyattn.pipeline import stored_attention

    record = ResultsStore.open(str(copy)).records().iloc[0]
    per_layer = stored_attention(record).sum(1)
    first, last = (int(v) for v in names[0].split("-"))
    from pyattn.compare.similarity import compare

    from pyattn.cli._checks import special_tokens

    special = special_tokens(ResultsStore.open(str(copy)).manifest()["tokenizer"])
    expected = compare(np.asarray(record["scores"]), {"r": per_layer[first : last + 1].sum(0)}, list(record["tokens"]),
                       special_tokens=special, masks=["alphabetic"])
    got = metrics[(metrics["document"] == record["doc_id"]) & (metrics["attention"] == names[0]) & (metrics["mask"] == "alphabetic")]
    assert got["spearman_rho"].iloc[0] == pytest.approx(expected["spearman_rho"].iloc[0])


@pytest.mark.parametrize("argv,message", [
    (["demo", "--top", "0"], "--top must be at least 1"),
    (["demo", "--documents", "0"], "--documents must be at least 1"),
    (["demo", "--max-words", "-5"], "--max-words must be at least 1"),
    (["importance", "--model", "demo", "--data", "{data}", "--out", "{tmp}/i.pt", "--limit", "0"], "--limit must be at least 1"),
    (["importance", "--model", "demo", "--data", "{data}", "--out", "{tmp}/i.pt", "--device", "banana"], "is not a device"),
    (["importance", "--model", "demo", "--data", "{data}", "--out", "{tmp}/i.pt", "--method", "magic"], "invalid choice: 'magic'"),
])
def test_other_commands_check_their_flags(argv, message, data, tmp_path, capsys):
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    before = snapshot(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert_one_clear_line(err, message)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------- 5. output paths checked
def test_attribute_out_is_a_file(models, data, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", target, *FAST)
    assert code == 2
    assert_one_clear_line(err, "is a file, not a directory")
    assert target.read_text() == "mine"


def test_attribute_refuses_a_foreign_folder(models, data, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", tmp_path, *FAST)
    assert code == 2
    assert_one_clear_line(err, "is not a pyattn results store")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name,make,message", [
    ("exists.pt", "file", "exists; pass --force"),
    ("wrong.txt", None, "must end in .pt or .npy"),
    ("missing-dir/i.pt", None, "does not exist"),
    ("folder.pt", "dir", "is a folder"),
    (".pt", None, "has no name before '.pt'"),  # issue 17
    (".npy", None, "has no name before '.npy'"),
])
def test_importance_out_checked_before_computing(name, make, message, data, tmp_path, capsys):
    target = tmp_path / name
    if make == "file":
        target.write_text("mine")
    elif make == "dir":
        target.mkdir()
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "importance", "--model", "demo", "--data", data, "--out", target, "--quiet")
    assert code == 2
    assert_one_clear_line(err, message)
    assert snapshot(tmp_path) == before


def test_report_never_overwrites_a_users_file(store, tmp_path, capsys):
    (tmp_path / "index.html").write_text("my page")
    code, _, err = run(capsys, "report", "--results", store, "--out", tmp_path, "--quiet")
    assert code == 2
    assert_one_clear_line(err, "holds files pyattn did not write")
    assert (tmp_path / "index.html").read_text() == "my page" and os.listdir(tmp_path) == ["index.html"]


def test_report_file_names_never_come_from_the_store(store, tmp_path, capsys):
    """A crafted store whose ``index`` and ``doc_id`` are paths: every report
    stays inside --out, and the index links only the reports pyattn wrote."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    crafted = shutil.copytree(store, tmp_path / "crafted")
    shard = ResultsStore.open(str(crafted)).shard_paths()[0]
    table = pq.read_table(shard).to_pandas()
    table["doc_id"] = ['../../evil"><script>alert(1)</script>', "/etc/passwd", "x"][: len(table)]
    table["index"] = [10**9, -5, 3][: len(table)]
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), shard)
    out = tmp_path / "reports"
    code, _, err = run(capsys, "report", "--results", crafted, "--out", out, "--quiet")
    assert code == 0, err
    written = sorted(os.listdir(out))
    # the pages and the tables of the numbers they show, under fixed names
    assert written == sorted([".pyattn-report", "index.html", "metrics.parquet", "metrics_intervals.csv", "tokens_intervals.csv"]
                             + [f"document-{i}.html" for i in range(N_DOCS)])
    assert sorted(os.listdir(tmp_path)) == ["crafted", "reports"]
    index = (out / "index.html").read_text()
    import re

    assert sorted(re.findall(r'href="([^"]*)"', index)) == sorted(f"document-{i}.html" for i in range(N_DOCS))
    assert "<script>alert" not in index
    # a second report into the same folder is fine: it is pyattn's own
    assert run(capsys, "report", "--results", crafted, "--out", out, "--quiet")[0] == 0


@pytest.mark.parametrize("results,message", [("{tmp}/nowhere", "is not a pyattn results store"), ("{tmp}/garbled", "cannot read")])
def test_compare_on_something_that_is_not_a_store(results, message, tmp_path, capsys):
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "manifest.json").write_text("{not json")
    code, _, err = run(capsys, "compare", "--results", results.format(tmp=tmp_path), "--quiet")
    assert code == 2
    assert_one_clear_line(err, message)


# ------------------------------------------------ 6. one writer, checked resume
def test_failed_model_load_leaves_no_store_and_the_corrected_run_works(models, data, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models["no_head"], "--data", data, "--out", out, *FAST)
    assert code == 2 and not out.exists()
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", out, "--id-column", "doc", *FAST)
    assert code == 0, err
    assert_store_once(out, [f"d{i}" for i in range(N_DOCS)])


def test_resume_names_documents_whose_text_changed(models, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", out, "--id-column", "doc", "--limit", "2", *FAST)[0] == 0
    frame = pd.read_csv(data)
    frame.loc[1, "text"] = "a different text"
    changed = tmp_path / "docs.csv"
    frame.to_csv(changed, index=False)
    before = snapshot(out)
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", changed, "--out", out, "--id-column", "doc", "--resume", "--force", *FAST)
    assert code == 2
    assert_one_clear_line(err, "1 finished document(s) have a different text now: 'd1' (row 1)")
    assert snapshot(out) == before
    # the same file resumes and adds the rest, each document once
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", out, "--id-column", "doc", "--resume", *FAST)
    assert code == 0, err
    assert_store_once(out, [f"d{i}" for i in range(N_DOCS)])


def test_a_held_store_is_refused_with_the_holders_pid(models, data, tmp_path, capsys):
    out = tmp_path / "out"
    store = ResultsStore.create(str(out), {"model": models["bert"], "settings": {}})
    try:
        code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", out, "--resume", "--force", *FAST)
        assert code == 2
        assert_one_clear_line(err, f"is in use by another pyattn run (PID {os.getpid()})")
        assert store.shard_paths() == []
    finally:
        store.close()
    # released: now it runs
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", out, "--resume", "--force", "--id-column", "doc", *FAST)
    assert code == 0, err


def test_an_interrupted_store_creation_is_taken_over(models, data, tmp_path, capsys):
    """A run killed while writing its first manifest leaves only pyattn's own
    files: the next run treats the folder as empty."""
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "manifest.json.0123abcd.tmp").write_text('{"pyattn_res')
    (out / ".pyattn.lock").write_text("999999")
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", data, "--out", out, "--id-column", "doc", *FAST)
    assert code == 0, err
    assert_store_once(out, [f"d{i}" for i in range(N_DOCS)])
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


# ------------------------------------------------ 8. numbers that make no sense
def _importance_file(tmp_path, kind):
    path = tmp_path / f"importance-{kind}.pt"
    good = torch.rand(2, 4)
    if kind == "nan":
        good[0, 1] = float("nan")
        torch.save(good, path)
    elif kind == "inf":
        good[1, 1] = float("inf")
        torch.save(good, path)
    elif kind == "negative":
        good[1, 2] = -0.5
        torch.save(good, path)
    elif kind == "garbage":
        path.write_bytes(os.urandom(256))
    elif kind == "pickle":
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path}/PWNED",))

        torch.save({"x": Evil()}, path)
    elif kind == "one_d":
        torch.save(torch.rand(8), path)
    elif kind == "wrong_shape":
        torch.save(torch.rand(3, 4), path)
    elif kind == "empty":
        torch.save(torch.zeros(0, 4), path)
    elif kind == "npy_pickle":
        path = tmp_path / "importance.npy"
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "npy_text":
        path = tmp_path / "importance.npy"
        path.write_text("1 2 3")
    elif kind == "strings":
        path = tmp_path / "importance.npy"
        np.save(path, np.array([["a", "b"]]))
    elif kind == "txt":
        path = tmp_path / "importance.txt"
        path.write_text("1 2")
    return path


@pytest.mark.parametrize("kind,message", [
    ("nan", "non-finite value(s)"),
    ("inf", "non-finite value(s)"),
    ("negative", "negative value(s) (min -0.5)"),
    ("garbage", "is not a head-importance array"),
    ("pickle", "pyattn never runs pickled code"),
    ("one_d", "must be 2-D (L, H)"),
    ("wrong_shape", "has shape (3, 4) but the store's model has 2 layers x 4 heads"),
    ("empty", "empty array"),
    ("npy_pickle", "is not a head-importance array"),
    ("npy_text", "is not a head-importance array"),
    ("strings", "is not a head-importance array"),
    ("txt", "use .pt or .npy"),
])
@pytest.mark.parametrize("command", ["compare", "report"])
def test_head_importance_that_makes_no_sense_is_refused(kind, message, command, store, tmp_path, capsys):
    path = _importance_file(tmp_path, kind)
    before = snapshot(store)
    code, _, err = run(capsys, command, "--results", store, "--head-importance", path, "--out" if command == "report" else "--quiet",
                       *([str(tmp_path / "reports"), "--quiet"] if command == "report" else []))
    assert code == 2
    assert_one_clear_line(err, message)
    assert "weights_only" not in err
    assert not (tmp_path / "PWNED").exists()
    assert snapshot(store) == before and not (tmp_path / "reports").exists()


# ------------------------------- 6/7. concurrency, kill -9 and Ctrl-C (processes)
def _cli(*args):
    return [sys.executable, "-m", "pyattn.cli", "attribute", *[str(a) for a in args]]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """Eight documents, so that a run has something left to do when stopped."""
    path = tmp_path_factory.mktemp("many") / "docs.csv"
    pd.DataFrame({"doc": [f"m{i}" for i in range(8)], "text": [sample_text(10 + i, seed=10 + i) for i in range(8)],
                  "label": [i % 3 for i in range(8)]}).to_csv(path, index=False)
    return str(path)


def test_two_runs_started_at_once_write_each_document_once(models, many, tmp_path):
    out = tmp_path / "out"
    argv = ["--model", models["bert"], "--data", many, "--out", out, "--id-column", "doc", "--resume", "--force", "--shard-size", "1", *FAST]
    first = subprocess.Popen(_cli(*argv), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(_cli(*argv), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [p.communicate(timeout=300) + (p.returncode,) for p in (first, second)]
    codes = sorted(r[2] for r in results)
    refused = [r for r in results if r[2] != 0]
    assert codes in ([0, 0], [0, 2]), results
    for _, err, _ in refused:
        assert_one_clear_line(err, "is in use by another pyattn run (PID")
    # [0, 0] happens when one finished before the other started: then the
    # second found everything done. Either way, each document once.
    assert_store_once(out, [f"m{i}" for i in range(8)])


@pytest.mark.parametrize("point", ["shard", "manifest", "skipped", "lock"])
def test_kill_9_while_writing_then_resume(point, models, many, tmp_path):
    data = many
    if point == "skipped":  # a document to skip, so that the skipped list is written
        frame = pd.read_csv(many)
        frame.loc[len(frame)] = ["blank", "", 0]
        data = tmp_path / "with-blank.csv"
        frame.to_csv(data, index=False)
    out = tmp_path / "out"
    ready = tmp_path / "ready"
    argv = ["--model", models["bert"], "--data", data, "--out", out, "--id-column", "doc", "--shard-size", "2", *FAST]
    process = subprocess.Popen(_cli(*argv), env=_env(PYATTN_FAULT=point, PYATTN_FAULT_READY=str(ready)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not ready.exists():
        assert process.poll() is None, f"the run ended before reaching {point}: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"never reached {point}"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # resume (a store killed before its manifest existed is taken over as new)
    resume = ["--resume"] if (out / "manifest.json").exists() else []
    result = subprocess.run(_cli(*argv, *resume), env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    store = assert_store_once(out, [f"m{i}" for i in range(8)])
    assert [e["doc_id"] for e in store.skipped()] == (["blank"] if point == "skipped" else [])
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_ctrl_c_keeps_finished_documents_and_says_how_to_resume(models, tmp_path):
    # 60 documents of 32 steps each, one per forward (--batch-size = --steps), so that a run stopped after
    # its second shard still has most of its work left on a fast, idle machine (8 tiny documents of 4
    # steps could all finish between the second shard and the signal)
    docs = tmp_path / "docs.csv"
    ids = [f"m{i}" for i in range(60)]
    pd.DataFrame({"doc": ids, "text": [sample_text(40 + i % 7, seed=100 + i) for i in range(60)],
                  "label": [i % 3 for i in range(60)]}).to_csv(docs, index=False)
    out = tmp_path / "out"
    argv = ["--model", models["bert"], "--data", str(docs), "--out", out, "--id-column", "doc", "--shard-size", "1",
            "--steps", "32", "--batch-size", "32", "--device", "cpu", "--quiet"]
    # the child starts with Ctrl-C's default handling even when an earlier test left SIGINT ignored in
    # this process (an ignored signal is inherited, and Python then installs no KeyboardInterrupt handler)
    process = subprocess.Popen(_cli(*argv), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not (out / "shards").is_dir() or len([n for n in os.listdir(out / "shards") if n.endswith(".parquet")]) < 2:
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert_one_clear_line(err, "interrupted:", "documents are stored in", "--resume to continue")
    finished = ResultsStore.open(str(out)).done_ids()
    assert 2 <= len(finished) < 60
    result = subprocess.run(_cli(*argv, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_store_once(out, ids)


def test_flush_by_elapsed_time(models, many, tmp_path, capsys):
    """With a huge --shard-size, --flush-seconds still writes each document
    as it finishes (a shard per document at a tiny interval)."""
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", many, "--out", out, "--id-column", "doc",
                       "--shard-size", "1000", "--flush-seconds", "1e-9", *FAST)
    assert code == 0, err
    store = assert_store_once(out, [f"m{i}" for i in range(8)])
    assert len(store.shard_paths()) == 8


def test_shard_writer_flushes_by_count_and_by_time(tmp_path):
    from pyattn.pipeline.store import ShardWriter

    now = [0.0]
    store = ResultsStore.create(str(tmp_path / "s"), {"settings": {}})
    try:
        writer = ShardWriter(store, size=3, seconds=10.0, clock=lambda: now[0])
        for i in range(2):
            writer.add({"doc_id": f"a{i}", "index": i})
        assert store.shard_paths() == []  # neither 3 records nor 10 s yet
        now[0] = 10.0
        writer.add({"doc_id": "a2", "index": 2})
        assert len(store.shard_paths()) == 1  # count and time both due
        writer.add({"doc_id": "a3", "index": 3})
        now[0] = 25.0
        writer.add({"doc_id": "a4", "index": 4})  # 15 s later: flushed by time with 2 records
        assert len(store.shard_paths()) == 2 and sorted(store.done_ids()) == [f"a{i}" for i in range(5)]
    finally:
        store.close()


def test_progress_is_by_tokens(models, many, tmp_path, capsys):
    """The bar's total is the documents' tokens ([CLS] and [SEP] in), so its
    ETA weighs each document by its length."""
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", many, "--out", out, "--id-column", "doc",
                       "--steps", "4", "--device", "cpu")
    assert code == 0
    tokens = sum(len(row["tokens"]) for _, row in ResultsStore.open(str(out)).records().iterrows())
    assert f"{tokens}/{tokens}" in err and "8/8 docs" in err and "tok" in err


# =================================================================== issue 17
# Families 4-8 of issue 17: the model and torch's state are left as found
# when a call is refused (4); tensors, not arrays or lists, at the ops and
# model-level calls (6); inputs that cannot run as asked (7); report links (8).
# Python calls are checked as the CLI is: the error's class, a message of one
# or two lines naming the argument (no torch internals), and what is left
# behind (the model as found, no file written).
from pyattn.report import index_report, write_html  # noqa: E402

TORCH_INTERNALS = ("enforce fail", "Expected a value of type", "while checking arguments", "inline_container", "object has no attribute",
                   "index out of range", "Traceback")


def assert_clear_error(raised, *fragments: str) -> None:
    message = str(raised.value)
    lines = [line for line in message.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, f"expected one or two lines, got {len(lines)}:\n{message}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    for internal in TORCH_INTERNALS:
        assert internal not in message, f"torch's internals in {message!r}"


def light_state(model) -> tuple:
    """What a refused call must not change: attention implementation,
    training flags, hooks, requires_grad and .grad."""
    return (model.config._attn_implementation, [m.training for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
            [(p.requires_grad, None if p.grad is None else id(p.grad)) for p in model.parameters()])


@pytest.fixture(scope="module")
def user():
    """A tiny BERT as a user leaves it: sdpa attention, training mode, its own .grad on one weight."""
    model = tiny_classifier("bert", seed=2)
    tokenizer = tiny_tokenizer("bert")
    with torch.no_grad():  # a model that has run: transformers installs its output-capturing hooks on the first call
        model(**tokenizer("the model", return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    model.train()
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    assert model.config._attn_implementation == "sdpa"
    return model, tokenizer


def refused(user, call, *fragments, error=(ValueError, TypeError)):
    model, tokenizer = user
    before = light_state(model)
    with pytest.raises(error) as raised:
        call(model, tokenizer)
    assert_clear_error(raised, *fragments)
    assert light_state(model) == before, "a refused call changed the model"
    return raised


TEXT17 = sample_text(12, seed=17)
BAND = torch.full((1, 2, 6, 5), 0.2)  # B=1, H=2, N=6, X=0, w=4
BAND4 = torch.full((1, 4, 6, 5), 0.2)  # H=4, as the tiny models' (L, H) = (2, 4) importance


# ---------------------------------------------- 6. the ops take tensors
OP_CASES = [
    ("band_to_dense-numpy", lambda: pyattn_ops().band_to_dense(BAND.numpy()), "local_attn must be a torch.Tensor", "numpy.ndarray"),
    ("band_to_dense-list", lambda: pyattn_ops().band_to_dense(BAND.tolist()), "local_attn must be a torch.Tensor", "list"),
    ("band_to_dense-global-numpy", lambda: pyattn_ops().band_to_dense(BAND, np.zeros((1, 2, 6, 1), np.float32)), "global_attn must be a torch.Tensor", "numpy"),
    ("band_to_dense-mask-list", lambda: pyattn_ops().band_to_dense(BAND, None, [[0] * 6]), "global_attention_mask must be a torch.Tensor", "list"),
    ("received-numpy", lambda: pyattn_ops().attention_received(BAND.numpy()), "local_attn must be a torch.Tensor", "numpy.ndarray"),
    ("received-head-weights-list", lambda: pyattn_ops().attention_received(BAND, None, None, [1.0, 1.0]), "head_weights must be a torch.Tensor (H,)", "list"),
    ("received-head-weights-numpy", lambda: pyattn_ops().attention_received(BAND, None, None, np.ones(2)), "head_weights must be a torch.Tensor", "numpy"),
    ("received-row-weights-numpy", lambda: pyattn_ops().attention_received(BAND, None, None, None, np.ones((1, 6))), "row_weights must be a torch.Tensor (B, N)", "numpy"),
    ("received-number", lambda: pyattn_ops().attention_received(0.5), "local_attn must be a torch.Tensor", "float"),
    ("layers-numpy-array", lambda: pyattn_ops().attention_received_layers(np.zeros((2, 1, 2, 6, 5))), "local_attn must be a sequence of torch.Tensor", "numpy"),
    ("layers-numpy-in-list", lambda: pyattn_ops().attention_received_layers([BAND, BAND.numpy()]), "local_attn[1] must be a torch.Tensor", "numpy"),
    ("layers-global-numpy-in-list", lambda: pyattn_ops().attention_received_layers([BAND], [np.zeros((1, 2, 6, 1))]), "global_attn[0] must be a torch.Tensor", "numpy"),
    ("layers-head-weights-list", lambda: pyattn_ops().attention_received_layers([BAND], None, None, [[1.0, 1.0]]), "head_weights must be a torch.Tensor (L, H)", "list"),
    ("layer_attention_received-numpy", lambda: __import__("pyattn").layer_attention_received([BAND.numpy()], None, None), "attentions[0] must be a torch.Tensor", "numpy"),
    ("rollout-list-of-lists", lambda: __import__("pyattn.model_attention.rollout", fromlist=["x"]).attention_rollout([BAND.tolist()]), "attentions[0] must be a torch.Tensor", "list"),
]


def pyattn_ops():
    import pyattn.kernels.ops

    return pyattn.kernels.ops


@pytest.mark.parametrize("call,fragment,what", [c[1:] for c in OP_CASES], ids=[c[0] for c in OP_CASES])
def test_ops_say_they_take_tensors(call, fragment, what):
    with pytest.raises(TypeError) as raised:
        call()
    assert_clear_error(raised, fragment, what)


# ------------------------------------- 6. model-level calls take tensors
def _ids(values, **kwargs):
    return torch.tensor(values, **kwargs)


MODEL_INPUT_CASES = [
    ("ids-list", lambda m, t: pyattn_mod().attention_from_inputs(m, [[2, 5, 3]]), "input_ids must be a torch.Tensor", "list"),
    ("ids-numpy", lambda m, t: pyattn_mod().attention_from_inputs(m, np.array([[2, 5, 3]])), "input_ids must be a torch.Tensor", "numpy.ndarray"),
    ("ids-float", lambda m, t: pyattn_mod().attention_from_inputs(m, _ids([[2.0, 5.0, 3.0]])), "input_ids must hold integer token ids", "float32"),
    ("ids-bool", lambda m, t: pyattn_mod().attention_from_inputs(m, _ids([[True, False]])), "input_ids must hold integer token ids", "bool"),
    ("ids-over-vocab", lambda m, t: pyattn_mod().attention_from_inputs(m, _ids([[2, 64, 3]])), "input_ids holds id 64", "0..63"),
    ("ids-negative", lambda m, t: pyattn_mod().attention_from_inputs(m, _ids([[2, -1, 3]])), "input_ids holds id -1", "vocabulary"),
    ("ids-meta", lambda m, t: pyattn_mod().attention_from_inputs(m, torch.zeros(1, 3, dtype=torch.long, device="meta")), "input_ids is a meta tensor", "real values"),
    ("ids-empty", lambda m, t: pyattn_mod().attention_from_inputs(m, torch.zeros(1, 0, dtype=torch.long)), "input_ids must be (B, N)", "(1, 0)"),
    ("ids-3d", lambda m, t: pyattn_mod().attention_from_inputs(m, torch.zeros(1, 1, 3, dtype=torch.long)), "input_ids must be (B, N)", "(1, 1, 3)"),
    ("mask-float", lambda m, t: pyattn_mod().attention_from_inputs(m, _ids([[2, 5, 3]]), attention_mask=torch.ones(1, 3)), "attention_mask must be an integer or bool tensor", "float32"),
    ("mask-list", lambda m, t: pyattn_mod().attention_from_inputs(m, _ids([[2, 5, 3]]), attention_mask=[[1, 1, 1]]), "attention_mask must be a torch.Tensor", "list"),
    ("mask-shape", lambda m, t: pyattn_mod().attention_from_inputs(m, _ids([[2, 5, 3]]), attention_mask=torch.ones(1, 4, dtype=torch.long)), "attention_mask must have the shape of input_ids (1, 3)", "(1, 4)"),
    ("single-pass-ids-list", lambda m, t: pyattn_mod().single_pass_from_inputs(m, [2, 5, 3]), "input_ids must be a torch.Tensor", "list"),
    ("single-pass-ids-float", lambda m, t: pyattn_mod().single_pass_from_inputs(m, _ids([2.0, 5.0, 3.0])), "input_ids must hold integer token ids", "float"),
    ("single-pass-ids-over-vocab", lambda m, t: pyattn_mod().single_pass_from_inputs(m, _ids([2, 99, 3])), "input_ids holds id 99", "0..63"),
]


def pyattn_mod():
    import pyattn

    return pyattn


@pytest.mark.parametrize("call,fragment,what", [c[1:] for c in MODEL_INPUT_CASES], ids=[c[0] for c in MODEL_INPUT_CASES])
def test_model_level_calls_say_they_take_tensors(call, fragment, what, user):
    refused(user, call, fragment, what)


# --------------- 6/7. head importance: numbers, finite, >= 0, real, outside autograd
def _importance(kind):
    good = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    if kind == "nan":
        good[1, 2] = float("nan")
    elif kind == "inf":
        good[0, 0] = float("inf")
    elif kind == "negative":
        good[0, 3] = -0.25
    elif kind == "meta":
        return torch.zeros(2, 4, device="meta")
    elif kind == "requires-grad":
        return good.requires_grad_(True)
    elif kind == "strings":
        return [["a", "b", "c", "d"]] * 2
    return good


IMPORTANCE_KINDS = [("nan", "non-finite value(s)"), ("inf", "non-finite value(s)"), ("negative", "negative value(s) (min -0.25)"),
                    ("meta", "is a meta tensor"), ("requires-grad", "requires grad: pass importance.detach()"), ("strings", "of numbers")]
IMPORTANCE_CALLS = {
    "attention": lambda m, t, hi: pyattn_mod().attention(m, t, TEXT17, head_importance=hi),
    "explain": lambda m, t, hi: pyattn_mod().explain(m, t, TEXT17, head_importance=hi, n_steps=2),
    "attention_views": lambda m, t, hi: __import__("pyattn.explanation", fromlist=["x"]).attention_views(torch.ones(2, 4, 5), hi),
    "rollout": lambda m, t, hi: __import__("pyattn.model_attention.rollout", fromlist=["x"]).attention_rollout([BAND4, BAND4], head_importance=hi),
}


@pytest.mark.parametrize("kind,message", IMPORTANCE_KINDS, ids=[k[0] for k in IMPORTANCE_KINDS])
@pytest.mark.parametrize("entry", list(IMPORTANCE_CALLS))
def test_head_importance_that_makes_no_sense_is_refused_at_every_entry_point(entry, kind, message, user):
    refused(user, lambda m, t: IMPORTANCE_CALLS[entry](m, t, _importance(kind)), "head_importance", message)


@pytest.mark.parametrize("kind,message", [k for k in IMPORTANCE_KINDS if k[0] in ("nan", "negative", "meta")])
def test_head_importance_from_python_to_compare_and_report_is_checked(kind, message, store, tmp_path):
    from pyattn.pipeline import compare_results, report_results

    before = snapshot(store)
    for call in (lambda s: compare_results(s, head_importance=_importance(kind), progress=False),
                 lambda s: report_results(s, str(tmp_path / "reports"), head_importance=_importance(kind), progress=False)):
        opened = ResultsStore.open(str(store))
        try:
            with pytest.raises(ValueError) as raised:
                call(opened)
        finally:
            opened.close() if hasattr(opened, "close") else None
        assert_clear_error(raised, "head_importance", message)
    assert snapshot(store) == before and not (tmp_path / "reports").exists()


# --------------------------------------------- 7. what cannot run is refused at once
STEP_CASES = [
    ("attribute-n_steps", lambda m, t: pyattn_mod().attribute(m, t, TEXT17, n_steps=10**9), "n_steps must be \"auto\" or an int 1..4096", "1000000000"),
    ("attribute-max_steps", lambda m, t: pyattn_mod().attribute(m, t, TEXT17, max_steps=10**9), "max_steps must be an int 2..4096", "1000000000"),
    ("attribute_many-n_steps", lambda m, t: pyattn_mod().attribute_many(m, t, [TEXT17], n_steps=5000, progress=False), "n_steps must be", "5000"),
    ("explain-n_steps", lambda m, t: pyattn_mod().explain(m, t, TEXT17, n_steps=10**9), "n_steps must be", "1..4096"),
    ("stream-max_steps", lambda m, t: next(pyattn_mod().attribute_stream(m, t, [TEXT17], max_steps=2**40)), "max_steps must be", "2..4096"),
]


@pytest.mark.parametrize("call,fragment,what", [c[1:] for c in STEP_CASES], ids=[c[0] for c in STEP_CASES])
def test_steps_beyond_what_can_run_are_refused_at_once(call, fragment, what, user):
    start = time.perf_counter()
    refused(user, call, fragment, what, error=ValueError)
    assert time.perf_counter() - start < 5, "refused before any work"


LENGTH_CASES = [
    ("attribute", lambda m, t: pyattn_mod().attribute(m, t, TEXT17, max_length=1000, n_steps=2), "max_length 1000 is over the model's limit of 128 tokens"),
    ("attention", lambda m, t: pyattn_mod().attention(m, t, TEXT17, max_length=129), "max_length 129 is over the model's limit of 128 tokens"),
    ("single_pass", lambda m, t: pyattn_mod().single_pass(m, t, TEXT17, max_length=4096), "max_length 4096 is over the model's limit"),
    ("explain", lambda m, t: pyattn_mod().explain(m, t, TEXT17, max_length=500, n_steps=2), "max_length 500 is over the model's limit"),
    ("taylor", lambda m, t: pyattn_mod().taylor_importance(m, t, [TEXT17], [0], max_length=300, progress=False), "max_length 300 is over the model's limit"),
    ("faithfulness", lambda m, t: __import__("pyattn.compare.faithfulness", fromlist=["x"]).faithfulness(m, t, TEXT17, {}, max_length=200), "max_length 200 is over"),
    ("attention-fractional", lambda m, t: pyattn_mod().attention(m, t, TEXT17, max_length=12.5), "max_length must be None or an int >= 3"),
]


@pytest.mark.parametrize("call,fragment", [c[1:] for c in LENGTH_CASES], ids=[c[0] for c in LENGTH_CASES])
def test_max_length_beyond_the_models_positions_is_refused(call, fragment, user):
    refused(user, call, fragment)


def test_max_length_at_the_models_positions_runs_on_the_longest_text(user):
    """The limit is real: 128 positions run (a 300-word text, cut with the usual warning)."""
    from pyattn.models.inputs import TruncationWarning

    model, tokenizer = user
    before = light_state(model)
    with pytest.warns(TruncationWarning):
        result = pyattn_mod().attribute(model, tokenizer, sample_text(300, seed=3), max_length=128, n_steps=2)
    assert len(result.scores) == 128 and light_state(model) == before


def _tokenizer(vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")


SPECIALS = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
STRANGER = _tokenizer({**SPECIALS, "the": 4, "a": 5})  # knows two words: most of any text is [UNK]
FAR_IDS = _tokenizer({**SPECIALS, **{word: 100 + i for i, word in enumerate(["the", "a", "model", "of", "and", "to", "in", "is"])}})

TOKENIZER_CASES = [
    ("attribute-unknown", lambda m, t: pyattn_mod().attribute(m, STRANGER, TEXT17, n_steps=2), "are unknown to the tokenizer", "does not fit"),
    ("attention-unknown", lambda m, t: pyattn_mod().attention(m, STRANGER, TEXT17), "are unknown to the tokenizer", "[UNK]"),
    ("explain-unknown", lambda m, t: pyattn_mod().explain(m, STRANGER, TEXT17, n_steps=2), "are unknown to the tokenizer", "model's own tokenizer"),
    ("taylor-unknown", lambda m, t: pyattn_mod().taylor_importance(m, STRANGER, [TEXT17], [0], progress=False), "are unknown to the tokenizer", "does not fit"),
    ("attribute-far-ids", lambda m, t: pyattn_mod().attribute(m, FAR_IDS, "the model of a model", n_steps=2), "the tokenizer gives id 10", "0..63 only"),
    ("single_pass-far-ids", lambda m, t: pyattn_mod().single_pass(m, FAR_IDS, "the model of a model"), "the tokenizer gives id 10", "does not belong to the model"),
]


@pytest.mark.parametrize("call,fragment,what", [c[1:] for c in TOKENIZER_CASES], ids=[c[0] for c in TOKENIZER_CASES])
def test_a_tokenizer_that_does_not_fit_the_model_is_refused(call, fragment, what, user):
    refused(user, call, fragment, what)


def test_a_short_text_of_one_unknown_word_still_runs(user):
    """The refusal is for a tokenizer that does not fit, not for one rare
    word among known ones; a text whose every token is unknown has nothing to
    explain and is refused whatever its length (issue 21)."""
    model, tokenizer = user
    known = next(w for w in sorted(tokenizer.get_vocab()) if w.isalpha() and w.islower() and len(w) > 2)
    result = pyattn_mod().attribute(model, tokenizer, f"{known} zyzzyva", n_steps=2)
    assert result.tokens == ["[CLS]", known, "[UNK]", "[SEP]"]
    with pytest.raises(ValueError) as raised:
        pyattn_mod().attribute(model, tokenizer, "zyzzyva", n_steps=2)
    assert_clear_error(raised, "1 of the 1 tokens", "are unknown to the tokenizer")


@pytest.mark.parametrize("command", ["attribute", "importance"])
def test_cli_refuses_a_tokenizer_that_does_not_fit(command, models, data, tmp_path, capsys):
    folder = tmp_path / "stranger"
    STRANGER.save_pretrained(folder)
    out = tmp_path / ("out" if command == "attribute" else "importance.pt")
    code, _, err = run(capsys, command, "--model", models["bert"], "--tokenizer", folder, "--data", data, "--out", out,
                       *(FAST if command == "attribute" else ["--device", "cpu", "--quiet"]))
    assert code == 2
    assert_one_clear_line(err, "are unknown to the tokenizer", "--tokenizer")
    assert not out.exists()


LABEL_CASES = [
    ("taylor-fractional", "taylor_importance", [0, 1.5], "labels[1] is 1.5: a label must be a whole class index"),
    ("gate-fractional", "head_gate_importance", [0.5], "labels[0] is 0.5"),
    ("taylor-out-of-range", "taylor_importance", [3], "labels[0] is 3, out of range: the model has classes 0..2"),
    ("taylor-negative", "taylor_importance", [-1], "labels[0] is -1, out of range"),
    ("taylor-bool", "taylor_importance", [True], "labels[0] is True"),
    ("taylor-nan", "taylor_importance", [float("nan")], "labels[0] is nan"),
    ("taylor-string", "taylor_importance", ["positive"], "labels[0] is 'positive'"),
]


@pytest.mark.parametrize("function,labels,fragment", [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_head_importance_refuses_labels_that_are_not_classes(function, labels, fragment, user):
    texts = [TEXT17] * len(labels)
    refused(user, lambda m, t: getattr(pyattn_mod(), function)(m, t, texts, labels, progress=False), fragment, error=ValueError)


def test_head_importance_takes_whole_number_floats_as_labels(user):
    """1.0 (a pandas float column) is class 1, as the integer is."""
    model, tokenizer = user
    as_float = pyattn_mod().taylor_importance(model, tokenizer, [TEXT17], [1.0], progress=False)
    as_int = pyattn_mod().taylor_importance(model, tokenizer, [TEXT17], [1], progress=False)
    assert torch.equal(as_float, as_int)


@pytest.mark.parametrize("suffix,write", [
    (".jsonl", lambda path, rows: path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in rows).encode())),
    (".csv", lambda path, rows: path.write_bytes(b"\xef\xbb\xbf" + pd.DataFrame(rows).to_csv(index=False).encode())),
], ids=["jsonl", "csv"])
def test_data_with_a_byte_order_mark_is_read(suffix, write, models, tmp_path, capsys):
    rows = [{"doc": f"b{i}", "text": sample_text(8, seed=30 + i), "label": i % 3} for i in range(3)]
    path = tmp_path / f"bom{suffix}"
    write(path, rows)
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", path, "--out", out, "--id-column", "doc", *FAST)
    assert code == 0, err
    records = assert_store_once(out, ["b0", "b1", "b2"]).records().set_index("doc_id")
    assert records.loc["b1", "label"] == 1


SAVE_CASES = [
    ("dir-dot-pt", "{tmp}/.pt", "has no name before '.pt'"),
    ("dir-dot-npy", "{tmp}/.npy", "has no name before '.npy'"),
    ("missing-folder", "{tmp}/nowhere/importance.pt", "folder '{tmp}/nowhere' does not exist"),
    ("a-folder", "{tmp}/folder.pt", "is a folder"),
    ("txt", "{tmp}/importance.txt", "use .pt or .npy"),
]


@pytest.mark.parametrize("target,fragment", [c[1:] for c in SAVE_CASES], ids=[c[0] for c in SAVE_CASES])
def test_save_head_importance_to_a_name_that_cannot_be_a_file(target, fragment, tmp_path):
    (tmp_path / "folder.pt").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as raised:
        pyattn_mod().save_head_importance(torch.ones(2, 4), target.format(tmp=tmp_path))
    assert_clear_error(raised, fragment.format(tmp=tmp_path))
    assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["folder.pt"]


# ------------------------------------ 8. the index links only to what pyattn wrote
LINK_CASES = [
    ("javascript", "javascript:alert(1)", "is not a plain relative path"),
    ("javascript-upper", " JavaScript:alert(1)", "is not a plain relative path"),
    ("https", "https://example.com/x.html", "is not a plain relative path"),
    ("data-url", "data:text/html;base64,PHNjcmlwdD4=", "is not a plain relative path"),
    ("protocol-relative", "//example.com/x.html", "is not a plain relative path"),
    ("absolute", "/etc/passwd", "is not a plain relative path"),
    ("parent", "../secret.html", "leaves the report folder"),
    ("encoded-parent", "%2e%2e/secret.html", "leaves the report folder"),
    ("query", "document-0.html?x=1", "is not a plain relative path"),
    ("missing-file", "document-9.html", "names no file in the report folder"),
    ("not-a-string", float("nan"), "is not a file name"),
    ("empty", "", "is not a file name"),
]


@pytest.mark.parametrize("link,fragment", [c[1:] for c in LINK_CASES], ids=[c[0] for c in LINK_CASES])
def test_index_report_links_only_to_files_in_its_folder(link, fragment, tmp_path):
    (tmp_path / "secret.html").write_text("not pyattn's")
    folder = tmp_path / "reports"
    write_html(folder / "document-0.html", "<p>a</p>")
    before = snapshot(tmp_path)
    table = pd.DataFrame({"document": ["a", "b"], "report": ["document-0.html", link], "spearman": [0.5, 0.25]})
    with pytest.raises(ValueError) as raised:
        index_report(folder / "index.html", table)
    assert_clear_error(raised, "table row 1", "column 'report'", fragment)
    assert snapshot(tmp_path) == before, "nothing written"
    # the good row alone is linked
    index_report(folder / "index.html", table.iloc[:1])
    import re

    assert re.findall(r'href="([^"]*)"', (folder / "index.html").read_text()) == ["document-0.html"]


# -------------------------------- 4. inside no_grad / inference_mode, frozen, refused
@pytest.mark.filterwarnings("ignore::pyattn.explanation.NotConvergedWarning")  # n_steps fixed small for speed; convergence is tested elsewhere
@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "set_grad_enabled(False)"])
@pytest.mark.parametrize("entry", ["attribute", "taylor_importance", "head_gate_importance", "single_pass", "explain"])
def test_gradient_entry_points_run_inside_no_grad_and_on_frozen_models(entry, context, user):
    """No torch traceback: each runs and leaves the grad mode and the model as found."""
    model, tokenizer = user
    calls = {
        "attribute": lambda: pyattn_mod().attribute(model, tokenizer, TEXT17, n_steps=2),
        "taylor_importance": lambda: pyattn_mod().taylor_importance(model, tokenizer, [TEXT17], [1], progress=False),
        "head_gate_importance": lambda: pyattn_mod().head_gate_importance(model, tokenizer, [TEXT17], [1], progress=False),
        "single_pass": lambda: pyattn_mod().single_pass(model, tokenizer, TEXT17),
        "explain": lambda: pyattn_mod().explain(model, tokenizer, TEXT17, n_steps=2, faithfulness=False),
    }
    frozen = [p for p in model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    previous = torch.is_grad_enabled()
    try:
        before = light_state(model)
        if context == "set_grad_enabled(False)":
            torch.set_grad_enabled(False)
            manager = __import__("contextlib").nullcontext()
        else:
            manager = getattr(torch, context)()
        with manager:
            grad_mode = torch.is_grad_enabled()
            result = calls[entry]()
            assert torch.is_grad_enabled() == grad_mode
        assert result is not None and light_state(model) == before
    finally:
        torch.set_grad_enabled(previous)
        for parameter in frozen:
            parameter.requires_grad_(True)
