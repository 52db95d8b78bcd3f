"""Dataset runs from the command line: the results store, resume after
SIGKILL, and the refusals that keep results safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import pyattn
from pyattn.cli import main
from pyattn.pipeline import stored_attention
from pyattn.pipeline.store import ResultsStore, StoreError


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    documents = [d for d in pyattn.demo_documents("test") if len(d.text.split()) < 260][:10]
    assert len(documents) == 10
    rows = [{"doc": f"d{i}", "text": d.text, "label": d.label} for i, d in enumerate(documents)]
    rows.insert(3, {"doc": "empty", "text": "   ", "label": 0})
    rows.insert(6, {"doc": "missing", "text": None, "label": 1})
    path = tmp_path_factory.mktemp("data") / "docs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def cli(*args):
    return [sys.executable, "-m", "pyattn.cli", "attribute", "--model", "demo", "--id-column", "doc", "--device", "cpu", "--quiet", *args]


def run_ok(*args):
    result = subprocess.run(cli(*args), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def uninterrupted(data_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    run_ok("--data", data_csv, "--out", str(out))
    return ResultsStore.open(str(out))


def test_store_contents(uninterrupted):
    records = uninterrupted.records()
    assert len(records) == 10 and records["doc_id"].is_unique
    assert {"empty", "missing"}.isdisjoint(records["doc_id"])
    skipped = {e["doc_id"]: e["reason"] for e in uninterrupted.skipped()}
    assert skipped == {"empty": "empty text", "missing": "empty text"}  # CSV cells are read as written: an empty cell is an empty text
    manifest = uninterrupted.manifest()
    assert manifest["model"] == "demo" and manifest["settings"]["n_steps"] == "auto" and manifest["pyattn_version"] == pyattn.__version__
    row = records.iloc[0]
    metrics = {m["attention"]: m for m in json.loads(row["metrics"])}
    assert set(metrics) == {"final", "all"} and -1 <= metrics["all"]["spearman_rho"] <= 1
    per_head = stored_attention(row)
    assert row["label_name"] == pyattn.demo.LABELS[row["label"]] and row["predicted_label_name"] == pyattn.demo.LABELS[row["predicted_label"]]
    # attention is stored as binary float32 arrays, 4 bytes x layers x heads per token
    import pyarrow.parquet as pq

    assert str(pq.read_schema(uninterrupted.shard_paths()[0]).field("attention_per_head").type) == "list<element: float>"
    assert per_head.shape == (3, 4, len(row["tokens"])) and len(row["scores"]) == len(row["tokens"]) and row["converged"]
    # each record's scores are what attribute() gives for that text
    text = pd.read_csv(manifest["settings"]["data"]).set_index("doc").loc[row["doc_id"], "text"]
    model, tokenizer = pyattn.load_demo()
    np.testing.assert_allclose(row["scores"], pyattn.attribute(model, tokenizer, text, device="cpu").scores, atol=1e-6)


def test_resume_after_sigkill(data_csv, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen(cli("--data", data_csv, "--out", str(out), "--shard-size", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = out / "shards"
    deadline = time.time() + 300
    while time.time() < deadline:
        if shards.is_dir() and len([n for n in os.listdir(shards) if n.endswith(".parquet")]) >= 3:
            break
        if process.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = ResultsStore.open(str(out))
    finished = store.done_ids()  # every shard readable: none is half-written
    assert 3 <= len(finished) < 10
    run_ok("--data", data_csv, "--out", str(out), "--shard-size", "1", "--resume")
    records = store.records()
    assert records["doc_id"].is_unique and finished <= set(records["doc_id"]) and len(records) == 10
    assert not [n for n in os.listdir(shards) if n.endswith(".tmp")]
    whole = uninterrupted.records().set_index("doc_id")
    for _, row in records.iterrows():
        np.testing.assert_allclose(row["scores"], whole.loc[row["doc_id"], "scores"], atol=1e-6)
        got = stored_attention(row)
        expected = stored_attention(whole.loc[row["doc_id"]])
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_refusals(data_csv, uninterrupted, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", str(foreign), "--id-column", "doc", "--quiet"]) == 2
    assert "is not a pyattn results store" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    existing = uninterrupted.path
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", existing, "--id-column", "doc", "--quiet"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", existing, "--id-column", "doc", "--steps", "32", "--resume", "--quiet"]) == 2
    assert "the settings differ from its manifest (n_steps: 'auto' -> 32)" in capsys.readouterr().err
    assert main(["attribute", "--model", "demo", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", str(tmp_path / "o2"), "--text-column", "body", "--quiet"]) == 2
    assert "has no column(s) ['body']" in capsys.readouterr().err


def test_corrupt_shard_is_named(uninterrupted, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(uninterrupted.path, copy)
    store = ResultsStore.open(str(copy))
    victim = store.shard_paths()[0]
    with open(victim, "r+b") as f:
        f.truncate(20)
    with pytest.raises(StoreError, match=r"shard .*part-000000.* is corrupt or unreadable .* move it out of the store and resume"):
        store.done_ids()


def test_compare_importance_and_report_commands(uninterrupted, data_csv, tmp_path, capsys):
    import shutil

    from pyattn.attribution.importance import load_head_importance

    store_dir = tmp_path / "store"
    shutil.copytree(uninterrupted.path, store_dir)
    importance_file = tmp_path / "importance.pt"
    assert main(["importance", "--model", "demo", "--data", data_csv, "--out", str(importance_file), "--limit", "4", "--quiet"]) == 0
    importance = load_head_importance(importance_file)
    assert importance.shape == (3, 4) and float(importance.max()) == 1.0
    assert main(["importance", "--model", "demo", "--data", data_csv, "--out", str(importance_file), "--quiet"]) == 2
    assert main(["compare", "--results", str(store_dir), "--head-importance", str(importance_file), "--layers", "1-2", "--head-map"]) == 0
    printed = capsys.readouterr().out
    assert "all, scaled" in printed and "1-2" in printed
    per_document = pd.read_parquet(store_dir / "metrics.parquet")
    assert set(per_document["document"]) == set(uninterrupted.records()["doc_id"])
    assert len(per_document) == 10 * 6 * 3  # documents x attention choices x masks
    summary = pd.read_csv(store_dir / "metrics_summary.csv")
    one = summary[(summary.attention == "final") & (summary["mask"] == "no_special")].iloc[0]
    docs = per_document[(per_document.attention == "final") & (per_document["mask"] == "no_special")]
    assert one["spearman_rho_mean"] == pytest.approx(docs["spearman_rho"].mean())
    assert pd.read_csv(store_dir / "tokens.csv")["sum"].is_monotonic_decreasing
    # every mean comes with a bootstrap interval around it
    intervals = pd.read_csv(store_dir / "metrics_intervals.csv")
    row = intervals[(intervals.attention == "final") & (intervals["mask"] == "no_special") & (intervals.metric == "spearman_rho")].iloc[0]
    assert row["mean"] == pytest.approx(docs["spearman_rho"].mean()) and row["ci_low"] <= row["mean"] <= row["ci_high"]
    # the head map: one row per layer x head, numbered from 0, Holm never below the raw p-value
    heads = pd.read_csv(store_dir / "head_agreement.csv")
    assert sorted(zip(heads["layer"], heads["head"])) == [(layer, head) for layer in range(3) for head in range(4)]
    assert (heads["p_holm"] >= heads["p_value"] - 1e-12).all() and heads["p_value"].between(0, 1).all()
    assert (store_dir / "head_agreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    token_intervals = pd.read_csv(store_dir / "tokens_intervals.csv")
    assert (token_intervals["mean_over_all_documents_low"] <= token_intervals["mean_over_all_documents"] + 1e-12).all()
    # per-document p-values on request: each equals the permutation test run on that document directly
    assert main(["compare", "--results", str(store_dir), "--significance", "19", "--quiet"]) == 0
    with_p = pd.read_parquet(store_dir / "metrics.parquet")
    assert with_p["p_spearman_rho"].between(1 / 20, 1).all()
    from pyattn.cli._checks import special_tokens
    from pyattn.pipeline import stored_attention
    from pyattn.compare.significance import permutation_test
    from pyattn.compare.similarity import token_masks

    record = ResultsStore.open(str(store_dir)).records().iloc[0]
    keep = token_masks(list(record["tokens"]), special_tokens("demo"))["no_special"]
    final = stored_attention(record)[-1].sum(0)
    direct = permutation_test(np.asarray(record["scores"])[keep], final[keep], n_perm=19).set_index("metric")["p_value"]
    row = with_p[(with_p.document == record["doc_id"]) & (with_p.attention == "final") & (with_p["mask"] == "no_special")].iloc[0]
    assert row["p_spearman_rho"] == pytest.approx(direct["spearman_rho"]) and row["p_rbo"] == pytest.approx(direct["rbo"])
    assert main(["report", "--results", str(store_dir), "--quiet"]) == 0
    index = (store_dir / "reports" / "index.html").read_text()
    assert index.count("<a href=") == 10
    # the index names its mask, as compare does, and shows the distributions and the head map
    assert "spearman, final (no_special)" in index and "mask &#39;no_special&#39;" in index
    assert index.count("data:image/png;base64,") == 2 and "Agreement per layer x head" in index
    # a head importance read from a file is titled by the file it came from
    assert main(["report", "--results", str(store_dir), "--head-importance", str(importance_file), "--out", str(tmp_path / "weighted"), "--quiet"]) == 0
    assert 'alt="head importance from importance.pt"' in (tmp_path / "weighted" / "document-0.html").read_text()
    assert main(["compare", "--results", str(tmp_path / "nowhere")]) == 2
    assert "is not a pyattn results store" in capsys.readouterr().err


def test_jsonl_and_parquet_inputs(tmp_path):
    from pyattn.pipeline.documents import DataError, load_documents

    frame = pd.DataFrame({"body": ["a text", "another"], "y": [1, 0], "key": ["k1", "k2"]})
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        documents = load_documents(str(tmp_path / name), "body", "y", "key")
        assert [(d.doc_id, d.text, d.label) for d in documents] == [("k1", "a text", 1), ("k2", "another", 0)]
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="use a .csv, .jsonl or .parquet file"):
        load_documents(str(tmp_path / "d.txt"))
    pd.DataFrame({"key": ["a", "a"], "text": ["x", "y"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="not unique"):
        load_documents(str(tmp_path / "dup.csv"), label_column=None, id_column="key")


def test_progress_moves_within_a_document():
    """The token bar advances as a document's integration nodes are evaluated,
    never past the document before it is finished, and lands exactly on the
    total."""
    from pyattn.pipeline import RunProgress

    bar = RunProgress([100, 50], enabled=True)
    callback = bar.within(100)
    callback(3, 9)
    assert bar.bar.n == 33
    callback(2, 9)  # never backwards
    assert bar.bar.n == 33
    callback(9, 9)  # all planned nodes done: a refinement may still follow
    assert bar.bar.n == 95
    bar.update(100)
    assert bar.bar.n == 100
    bar.within(50)(17, 17)
    bar.update(50)
    assert bar.bar.n == 150 and bar.done == 2
    bar.close()


def test_dataset_records_go_through_the_same_pipeline_as_explain(uninterrupted, data_csv):
    """A stored document, rebuilt into an Explanation (as `pyattn report`
    does), says what pyattn.explain says when run on its text directly."""
    from pyattn.explanation import compose
    from pyattn.pipeline import attribution_from_record, stored_attention

    model, tokenizer = pyattn.load_demo()
    record = uninterrupted.records().iloc[0]
    text = pd.read_csv(data_csv).set_index("doc").loc[record["doc_id"], "text"]
    direct = pyattn.explain(model, tokenizer, text, rollout=False, faithfulness=False, device="cpu")
    rebuilt = compose(attribution_from_record(record), stored_attention(record), special_tokens=tokenizer.all_special_tokens)
    assert rebuilt.tokens == direct.tokens
    np.testing.assert_allclose(rebuilt.attribution.scores, direct.attribution.scores, rtol=1e-6, atol=1e-9)
    assert rebuilt.attribution.output_gap == pytest.approx(direct.attribution.output_gap, abs=1e-7)
    for view in ("final", "all"):  # stored as float32
        np.testing.assert_allclose(rebuilt.attention[view], direct.attention[view], rtol=1e-5, atol=1e-5)
    a = rebuilt.similarity.set_index(["attention", "mask"])["spearman_rho"]
    b = direct.similarity.set_index(["attention", "mask"])["spearman_rho"]
    np.testing.assert_allclose(a.sort_index().to_numpy(), b.sort_index().to_numpy(), atol=1e-3)


def test_shards_that_do_not_fit_together_are_one_line_store_error(tmp_path):
    # written directly through the Python API: one shard's label a class name, another's an index
    from pyattn.pipeline.store import ResultsStore, StoreError

    with ResultsStore.create(str(tmp_path / "run"), {"model": "demo"}) as store:
        store.write_shard([{"doc_id": "a", "index": 0, "label": "programming languages"}])
        store.write_shard([{"doc_id": "b", "index": 1, "label": 0}])
    with pytest.raises(StoreError) as stop:
        ResultsStore.open(str(tmp_path / "run")).records()
    message = str(stop.value)
    assert "do not fit together" in message and "label" in message and "\n" not in message


def test_autocast_is_recorded_with_both_completeness_errors(data_csv, tmp_path):
    """--autocast bfloat16: each record names the dtype the model ran in and
    carries the completeness error against the float32 model's own gap;
    without it the two errors are one and the same."""
    half, full = tmp_path / "half", tmp_path / "full"
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", str(half), "--id-column", "doc", "--device", "cpu",
                 "--quiet", "--limit", "2", "--steps", "9", "--autocast", "bfloat16"]) == 0
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", str(full), "--id-column", "doc", "--device", "cpu",
                 "--quiet", "--limit", "2", "--steps", "9"]) == 0
    half_records, full_records = ResultsStore.open(half).records(), ResultsStore.open(full).records()
    assert list(half_records["compute_dtype"]) == ["bfloat16"] * 2 and list(full_records["compute_dtype"]) == ["float32"] * 2
    np.testing.assert_array_equal(full_records["float32_relative_error"], full_records["relative_error"])
    for (_, record), (_, exact) in zip(half_records.iterrows(), full_records.iterrows()):
        # the float32 error is measured against the float32 model's own gap
        gap = np.sum(exact["scores"]) - exact["delta"]  # F(input) - F(baseline) of the float32 model
        assert record["float32_relative_error"] == pytest.approx(abs(np.sum(record["scores"]) - gap) / abs(gap), abs=1e-5)
    assert ResultsStore.open(half).manifest()["settings"]["autocast"] == "bfloat16"
    assert "autocast" not in ResultsStore.open(full).manifest()["settings"]


def test_shards_without_a_manifest_are_not_taken_over_even_with_force(data_csv, uninterrupted, tmp_path, capsys):
    """A store whose manifest.json is gone: its shards' settings are unknown,
    so --resume --force must not count them as done under new settings."""
    import shutil

    orphan = tmp_path / "orphan"
    shutil.copytree(uninterrupted.path, orphan)
    os.remove(orphan / "manifest.json")
    shards = sorted(os.listdir(orphan / "shards"))
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", str(orphan), "--id-column", "doc",
                 "--steps", "8", "--resume", "--force", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds result shards but no manifest.json" in err
    assert sorted(os.listdir(orphan / "shards")) == shards and not (orphan / "manifest.json").exists()


def test_an_out_folder_several_levels_down_is_created(data_csv, tmp_path):
    out = tmp_path / "missing" / "deep" / "store"
    run_ok("--data", data_csv, "--out", str(out), "--id-column", "doc", "--limit", "1", "--steps", "4")
    assert (out / "manifest.json").is_file()


def test_an_all_zero_head_importance_is_refused(uninterrupted, tmp_path, capsys):
    """Attention scaled by zeros is zero everywhere: no ranking, no metric."""
    zeros = tmp_path / "zeros.npy"
    np.save(zeros, np.zeros((3, 4)))
    assert main(["compare", "--results", uninterrupted.path, "--head-importance", str(zeros)]) == 2
    assert "is 0 for every head" in capsys.readouterr().err


@pytest.mark.parametrize("key, value", [("settings", [1, 2]), ("settings", None), ("num_layers", "three"), ("num_heads", 0), ("model", 5)])
def test_a_hand_edited_manifest_is_named_before_any_work(data_csv, uninterrupted, tmp_path, capsys, key, value):
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(uninterrupted.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest[key] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["attribute", "--model", "demo", "--data", data_csv, "--out", str(copy), "--id-column", "doc", "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"manifest.json: {key!r} must be" in err
    assert main(["compare", "--results", str(copy)]) == 2
    assert f"manifest.json: {key!r} must be" in capsys.readouterr().err
