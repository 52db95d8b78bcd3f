"""`pyattn attribute` over 4 documents of 2,000-4,096 tokens on a Longformer
with longformer-base-4096's exact config (random seeded weights, built
locally: benchmarks/attribution_baselines.base_shaped_longformer), against
the previous automatic loop over the same documents, in one run:

- ``cli``: ``pyattn attribute --model <dir> --data <csv> --out <dir>`` with
  its defaults (``--steps auto``, tol 0.01, the batch size pyattn fits), the
  whole command: model loading, attention streaming, storing;
- ``doubling``: the previous ``--steps auto`` (Gauss-Legendre 8, 16, ...
  steps, a fresh Captum call per try, transformers' attention, batch 1),
  the attribution alone, so the ratio is conservative;
- ``cli-malloc-kept``: ``cli`` with ``PYATTN_MALLOC=keep``, glibc's malloc as
  it comes (the A/B of pyattn/_malloc.py's fixed mmap threshold: time and
  peak RSS).

Each route runs in its own process (benchmarks/cli_scale_child.py), so its
peak RSS (``ru_maxrss``, model loading included) is its own. Wall time: run
it on a quiet machine. The documents are slices of the demo corpus
tokenized by the demo tokenizer (ids < 50,265), of 2,046, 2,730, 3,414 and
4,094 tokens plus <s> and </s>.

Run: python -m pytest benchmarks/test_cli_scale.py --benchmark-only \\
         --benchmark-json=build/cli_scale.json
     python benchmarks/cli_scale_report.py build/cli_scale.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(ROOT, "build", "cli_scale")
TOKENS = [2046, 2730, 3414, 4094]  # + <s>, </s>: 2,048 ... 4,096


def _prepare() -> tuple[str, str]:
    """The base-shaped model (with the demo tokenizer) saved once, and the
    documents as a CSV."""
    model_dir = os.path.join(WORK, "model")
    data = os.path.join(WORK, "documents.csv")
    if os.path.exists(os.path.join(model_dir, "config.json")) and os.path.exists(data):
        return model_dir, data
    import pandas as pd

    sys.path.insert(0, HERE)
    from attribution_baselines import base_shaped_longformer, corpus_ids
    from pyattn.demo import load_demo

    _, tokenizer = load_demo()
    model = base_shaped_longformer(seed=0)
    model.config.id2label = {0: "first", 1: "second"}
    model.config.label2id = {"first": 0, "second": 1}
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    ids = corpus_ids(tokenizer, sum(TOKENS))
    texts, start = [], 0
    for n in TOKENS:
        texts.append(tokenizer.decode(ids[start : start + n]))
        start += n
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    return model_dir, data


def _run(route: str) -> dict:
    model_dir, data = _prepare()
    out = os.path.join(WORK, f"store-{route}")
    result = os.path.join(WORK, f"{route}.json")
    subprocess.run(["rm", "-rf", out], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    subprocess.run([sys.executable, os.path.join(HERE, "cli_scale_child.py"), route, model_dir, data, out, result],
                   check=True, env=env)
    with open(result) as f:
        return json.load(f)


@pytest.mark.parametrize("route", ["doubling", "cli", "cli-malloc-kept"])
def test_cli_scale(benchmark, route):
    benchmark.group = "cli-4-documents"
    load = os.getloadavg()[0]
    result = benchmark.pedantic(_run, args=(route,), rounds=1, iterations=1)
    benchmark.extra_info.update(result, load_before=load, load_after=os.getloadavg()[0])
