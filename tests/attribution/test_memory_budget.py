"""The memory budget of attribute (issue 13, item 4), measured: in a fresh
process per case, the peak resident memory of ``attribute`` on the demo model
stays within the budget, the batch it chooses grows with the budget, and the
per-step memory model upper-bounds the measured peak of one batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

import pyattn
from pyattn.attribution import MemoryBudgetWarning, batch_for_budget, parse_memory_budget, predicted_step_bytes
from testing import ROOT


# Runs in a fresh process: load the demo model, hand freed memory back, read
# the resident memory (baseline); then attribute one 2,048-token demo document
# (17 fixed nodes) with memory_budget = baseline + EXTRA, sampling RSS every
# 2 ms and reading the kernel's high-water mark; report the batches used.
SCRIPT = r"""
import json, resource, sys, threading
import torch
import pyattn
from pyattn.attribution import held_bytes
from pyattn.demo import demo_documents

extra = int(sys.argv[1])
tokens = int(sys.argv[2])
torch.set_num_threads(1)
model, tokenizer = pyattn.load_demo()
text = " ".join(d.text for d in demo_documents("test", n=6))
pyattn.attribute(model, tokenizer, "warm up the kernels", n_steps=3, internal_batch_size=1)
batches = []
model.base_model.encoder.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

baseline = held_bytes("cpu")
maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = [baseline]
stop = threading.Event()
def sample():
    while not stop.wait(0.002):
        peak[0] = max(peak[0], rss())
thread = threading.Thread(target=sample, daemon=True)
thread.start()
result = pyattn.attribute(model, tokenizer, text, n_steps=17, max_length=tokens, memory_budget=baseline + extra, device="cpu")
stop.set()
thread.join()
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak_bytes = max(peak[0], maxrss if maxrss > maxrss_before else 0)
print(json.dumps({"baseline": baseline, "peak": peak_bytes, "batches": batches, "tokens": len(result.tokens),
                  "evaluations": result.model_evaluations}))
"""


def _run(extra: int, tokens: int = 2048) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(extra), str(tokens)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def demo_model():
    return pyattn.load_demo()[0]


def test_peak_stays_within_the_budget_and_the_batch_grows_with_it(demo_model):
    one_step = predicted_step_bytes(demo_model, 2048, 1)
    runs = {}
    for steps in (2, 8):  # budgets worth about 2 and 8 predicted steps above the baseline
        extra = int(steps * one_step * 1.2)
        run = runs[steps] = _run(extra)
        assert run["tokens"] == 2048 and run["evaluations"] == 17
        assert sum(run["batches"]) == 17
        # the process's measured peak, above its resident memory when the call began, is within the budget
        assert run["peak"] - run["baseline"] <= extra, (run, extra)
    for steps, run in runs.items():
        fits = int(steps * 1.2)  # predicted steps in the budget: less the little the call itself holds first
        assert max(run["batches"]) in (fits - 1, fits), (steps, run["batches"])
    assert len(runs[8]["batches"]) < len(runs[2]["batches"])


@pytest.mark.parametrize("tokens,batch", [(512, 4), (1024, 8), (2048, 2)])
def test_prediction_upper_bounds_a_measured_batch(demo_model, tokens, batch):
    """One batch measured in a fresh process (the benchmark's own
    measurement, benchmarks/memory_budget.py) is below the prediction."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "memory_budget.py"), "point", "demo", "fast", "float32", str(tokens), str(batch)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    point = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 < point["step_bytes"] <= predicted_step_bytes(demo_model, tokens, batch, fast_attention=True)


def test_a_budget_below_one_step_warns_in_one_line_and_runs_at_batch_1(demo_model):
    _, tokenizer = pyattn.load_demo()
    text = "a compiler checks every typed program " * 40
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pyattn.attribute(demo_model, tokenizer, text, n_steps=5, memory_budget="1MB", device="cpu")
    budget_warnings = [w for w in caught if issubclass(w.category, MemoryBudgetWarning)]
    assert len(budget_warnings) == 1
    message = str(budget_warnings[0].message)
    assert "\n" not in message and "1 MB" in message and f"{len(result.tokens)}-token" in message and "batch 1" in message
    explicit = pyattn.attribute(demo_model, tokenizer, text, n_steps=5, internal_batch_size=1, device="cpu")
    assert result.scores.tolist() == explicit.scores.tolist()  # batch 1 indeed


def test_explicit_batch_size_wins_over_the_budget(demo_model):
    _, tokenizer = pyattn.load_demo()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemoryBudgetWarning)  # no budget check at all
        result = pyattn.attribute(demo_model, tokenizer, "a typed language", n_steps=5, internal_batch_size=5, memory_budget="1MB", device="cpu")
    assert result.model_evaluations == 5


def test_batch_for_budget_is_the_largest_that_fits(demo_model):
    one = predicted_step_bytes(demo_model, 1000, 1)
    for steps in (1, 3, 7):
        allowance = predicted_step_bytes(demo_model, 1000, steps)
        assert batch_for_budget(demo_model, 1000, 64, allowance) == steps
        assert batch_for_budget(demo_model, 1000, 64, allowance - 1) == steps - 1
    assert batch_for_budget(demo_model, 1000, 2, 100 * one) == 2  # never more than the steps asked for


@pytest.mark.parametrize("value", ["abc", 0, -1, "0GB", "-5GB", "nan", float("inf"), True, "6 parsecs", [6]])
def test_bad_budgets_are_refused_in_one_line(demo_model, value):
    with pytest.raises(ValueError, match=r"^memory_budget must be a positive number of bytes or a size such as \"6GB\".*got ") as error:
        parse_memory_budget(value)
    assert "\n" not in str(error.value)
    _, tokenizer = pyattn.load_demo()
    with pytest.raises(ValueError, match="memory_budget must be"):
        pyattn.attribute(demo_model, tokenizer, "a typed language", n_steps=3, memory_budget=value)


def test_sizes_are_read_as_written():
    assert parse_memory_budget("6GB") == 6 * 10**9
    assert parse_memory_budget("6 gb") == 6 * 10**9
    assert parse_memory_budget("500MB") == 500 * 10**6
    assert parse_memory_budget("4GiB") == 4 * 2**30
    assert parse_memory_budget("1.5e9") == 1_500_000_000
    assert parse_memory_budget(123456) == 123456
    assert parse_memory_budget(None) is None
