"""Throughput of dataset attribution on the demo model: one process, and Ray
with 1 and 2 workers (one core each), plus the fixed costs a scaling estimate
needs: model load and shard write. Numbers land in extra_info and in
benchmarks/README.md.

Run: python -m pytest benchmarks/test_ray_throughput.py --benchmark-only
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

import pyattn
from pyattn.pipeline.documents import load_documents
from pyattn.pipeline import run_attribution
from pyattn.pipeline.store import ResultsStore

ray = pytest.importorskip("ray")
from pyattn.pipeline.ray_engine import run_attribution_ray  # noqa: E402

KWARGS = {"n_steps": "auto", "device": "cpu"}
COUNT = 16


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    picked = [d for d in pyattn.demo_documents("test") if 300 < len(d.text.split()) < 900][:COUNT]
    path = tmp_path_factory.mktemp("tp") / "docs.csv"
    pd.DataFrame({"text": [d.text for d in picked], "label": [d.label for d in picked]}).to_csv(path, index=False)
    return load_documents(str(path))


def _store(tmp_path_factory):
    return ResultsStore.create(str(tmp_path_factory.mktemp("tp-out") / "out"), {"model": "demo", "settings": {}})


def test_throughput_single_process(benchmark, documents, tmp_path_factory):
    benchmark.group = "dataset-throughput"
    start = time.perf_counter()
    model, tokenizer = pyattn.load_demo()
    load_s = time.perf_counter() - start

    def run():
        return run_attribution(model, tokenizer, documents, _store(tmp_path_factory), KWARGS, progress=False)

    summary = benchmark.pedantic(run, rounds=1, iterations=1)
    store = _store(tmp_path_factory)
    run_attribution(model, tokenizer, documents[:4], store, KWARGS, shard_size=4, progress=False)
    start = time.perf_counter()
    store.write_shard(store.records().to_dict("records"))
    write_s = time.perf_counter() - start
    benchmark.extra_info.update(documents=summary.processed, docs_per_s=summary.processed / summary.seconds,
                                model_load_s=load_s, shard_write_s_per_4_docs=write_s)


@pytest.mark.parametrize("workers", [1, 2])
def test_throughput_ray(benchmark, documents, tmp_path_factory, workers):
    benchmark.group = "dataset-throughput"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        def run():
            return run_attribution_ray("demo", documents, _store(tmp_path_factory), KWARGS, num_workers=workers, progress=False)

        summary = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        ray.shutdown()
    benchmark.extra_info.update(documents=summary.processed, docs_per_s=summary.processed / summary.seconds)
