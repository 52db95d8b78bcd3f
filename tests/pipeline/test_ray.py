"""Dataset attribution on a local Ray cluster with 2 workers: the same
results as one process, and a worker killed mid-run loses nothing."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pandas as pd
import pytest

import pyattn
from pyattn.pipeline.documents import load_documents
from pyattn.pipeline import run_attribution
from pyattn.pipeline.store import ResultsStore

ray = pytest.importorskip("ray", reason="Ray is optional (pip install pyattn[ray]; the test extras install it)")
from pyattn.pipeline.ray_engine import run_attribution_ray  # noqa: E402

KWARGS = {"n_steps": "auto", "device": "cpu"}


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    picked = [d for d in pyattn.demo_documents("test") if len(d.text.split()) < 260][:8]
    path = tmp_path_factory.mktemp("ray-data") / "docs.csv"
    pd.DataFrame({"text": [d.text for d in picked] + [""], "label": [d.label for d in picked] + [0]}).to_csv(path, index=False)
    return load_documents(str(path))


@pytest.fixture(scope="module")
def single_process(documents, tmp_path_factory):
    store = ResultsStore.create(str(tmp_path_factory.mktemp("single") / "out"), {"model": "demo", "settings": {}})
    model, tokenizer = pyattn.load_demo()
    run_attribution(model, tokenizer, documents, store, KWARGS, progress=False)
    return store.records().set_index("doc_id")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def assert_same(records, expected):
    assert len(records) == len(expected) == 8 and records["doc_id"].is_unique
    for _, row in records.iterrows():
        np.testing.assert_allclose(row["scores"], expected.loc[row["doc_id"], "scores"], atol=1e-6)


def test_two_workers_match_one_process(cluster, documents, single_process, tmp_path):
    store = ResultsStore.create(str(tmp_path / "out"), {"model": "demo", "settings": {}})
    summary = run_attribution_ray("demo", documents, store, KWARGS, num_workers=2, shard_size=3, progress=False)
    assert summary.processed == 8 and [s["reason"] for s in summary.skipped] == ["empty text"]
    records = store.records()
    assert (records["predicted_label_name"] == [pyattn.demo.LABELS[p] for p in records["predicted_label"]]).all()
    assert_same(store.records(), single_process)


def test_a_killed_worker_loses_nothing(cluster, documents, single_process, tmp_path):
    store = ResultsStore.create(str(tmp_path / "out"), {"model": "demo", "settings": {}})
    killed = []

    def kill_one_worker(workers):
        def later():
            pid = ray.get(workers[0].getpid.remote())
            while len(store.shard_paths()) < 2:  # mid-run: two documents written, six to go
                threading.Event().wait(0.05)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        threading.Thread(target=later, daemon=True).start()

    summary = run_attribution_ray("demo", documents, store, KWARGS, num_workers=2, shard_size=1, progress=False, on_workers=kill_one_worker)
    assert killed, "the worker was not killed"
    assert summary.processed == 8
    assert_same(store.records(), single_process)


def test_a_worker_error_is_one_line_and_finished_documents_are_kept(cluster, documents, tmp_path):
    """A worker's failure ends the run with that error in one line (no Ray
    traceback); what finished before is in the store."""
    from pyattn.pipeline.ray_engine import RayRunError

    store = ResultsStore.create(str(tmp_path / "out"), {"model": "demo", "settings": {}})
    try:
        with pytest.raises(RayRunError) as caught:
            run_attribution_ray("demo", documents, store, {"n_steps": -3, "device": "cpu"}, num_workers=1, shard_size=1, progress=False)
    finally:
        store.close()
    message = str(caught.value)
    assert message.startswith("a Ray worker failed: ") and "\n" not in message and "Traceback" not in message
    assert store.records().empty or store.records()["doc_id"].is_unique


def test_cli_says_how_to_install_ray(monkeypatch, tmp_path, capsys):
    import builtins

    from pyattn.cli import main

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    data = tmp_path / "d.csv"
    pd.DataFrame({"text": ["the model"], "label": [0]}).to_csv(data, index=False)
    assert main(["attribute", "--model", "demo", "--data", str(data), "--out", str(tmp_path / "o"), "--engine", "ray", "--quiet"]) == 2
    assert "pip install 'pyattn[ray]'" in capsys.readouterr().err
