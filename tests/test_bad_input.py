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
from pyattn.store import ResultsStore

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
    from pyattn.runner import stored_attention

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
    ("bert", ["--tokenizer", "{no_tokenizer}"], "--tokenizer folder"),
    ("demo", ["--tokenizer", "{bert}"], "cannot be used with --model demo"),
    ("{root}/does-not-exist", [], "does not exist"),
]


@pytest.mark.parametrize("name,extra,message", BAD_MODELS, ids=[f"{m[0].split('/')[-1]}{'-' + m[1][0] if m[1] else ''}" for m in BAD_MODELS])
def test_models_that_cannot_be_explained_are_refused(name, extra, message, models, data, tmp_path, capsys):
    model = models.get(name, name.format(**models))
    extra = [e.format(**models) for e in extra]
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", model, "--data", data, "--out", out, *extra, *FAST)
    assert code == 2
    assert_one_clear_line(err, message)
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
    a text reading "NA" stays a text; the label column may be left out."""
    rows = {"doc": ["007", "08", "NA"], "text": ["NA", sample_text(6, seed=1), sample_text(7, seed=2)], "label": ["positive", "0", "neutral"]}
    path = write_csv(tmp_path, rows)
    out = tmp_path / "out"
    code, _, err = run(capsys, "attribute", "--model", models["bert"], "--data", path, "--out", out, "--id-column", "doc", *FAST)
    assert code == 0, err
    records = assert_store_once(out, ["007", "08", "NA"]).records().set_index("doc_id")
    assert records.loc["007", "label"] == 2 and records.loc["007", "label_name"] == "positive"
    assert records.loc["08", "label"] == 0 and records.loc["NA", "label"] == 1
    assert list(records.loc["007", "tokens"])[1:-1] == ["[UNK]"]  # "NA" was attributed as the text it is
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
    from pyattn.runner import stored_attention

    record = ResultsStore.open(str(copy)).records().iloc[0]
    per_layer = stored_attention(record).sum(1)
    first, last = (int(v) for v in names[0].split("-"))
    from pyattn.similarity import compare

    from pyattn.cli import _special_tokens

    special = _special_tokens(ResultsStore.open(str(copy)).manifest()["tokenizer"])
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


def test_ctrl_c_keeps_finished_documents_and_says_how_to_resume(models, many, tmp_path):
    out = tmp_path / "out"
    # --batch-size 4 (= --steps): one document per forward, so documents finish one by one (grouped,
    # all 8 tiny documents would share one batch and finish before the signal)
    argv = ["--model", models["bert"], "--data", many, "--out", out, "--id-column", "doc", "--shard-size", "1", "--batch-size", "4", *FAST]
    process = subprocess.Popen(_cli(*argv), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    assert 2 <= len(finished) <= 8
    result = subprocess.run(_cli(*argv, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_store_once(out, [f"m{i}" for i in range(8)])


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
    from pyattn.store import ShardWriter

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
