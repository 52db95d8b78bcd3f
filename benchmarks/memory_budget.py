"""Peak resident memory of one integrated-gradients evaluation batch, measured
in a fresh process per point, against pyattn's per-step memory model.

Each point builds the model and one document of N tokens in a new Python
process, builds the path integrand (embeddings of the input and baseline, as
:func:`pyattn.attribute` does), hands freed memory back to the OS
(``malloc_trim``), reads the process's resident memory (``held``), then runs
one batch of ``batch`` interpolation nodes forward and backward exactly as
``attribute`` does. ``step`` = peak RSS during the batch minus ``held``: the
peak is the larger of a 2 ms /proc sampler and ``ru_maxrss`` (the kernel's
exact high-water mark, used when it rose during the batch).

Models: ``base`` (Longformer with longformer-base-4096's exact config, random
seeded weights, built locally: benchmarks/attribution_baselines.py) and
``demo`` (the shipped demo model). Attention ``fast`` (pyattn's banded SDPA)
or ``transformers`` (the model's own); dtype ``float32`` or ``bfloat16``
(autocast, transformers' attention as ``attribute`` uses it).

Run (memory does not depend on machine load; run it niced):
    nice -n 19 python benchmarks/memory_budget.py measure benchmarks/results/memory_budget.json
    python benchmarks/memory_budget.py table benchmarks/results/memory_budget.json > benchmarks/results/memory_budget.md
``measure`` keeps the points already in the JSON (delete it to start over);
``PYATTN_BENCH_QUICK=1`` measures only the demo model and base at 512 tokens.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (model, attention, dtype, tokens, batch), in the order measured (cheap first)
DEMO_POINTS = [("demo", "fast", "float32", n, b) for n in (512, 1024, 2048, 4096) for b in (1, 4, 16)] + [
    ("demo", "transformers", "float32", n, b) for n in (512, 2048, 4096) for b in (1, 4)
]
BASE_POINTS = (
    [("base", "fast", "float32", n, b) for n in (512, 1024) for b in (1, 2, 4)]
    + [("base", "fast", "float32", n, b) for n in (2048, 4096) for b in (1, 2)]
    + [("base", "transformers", "float32", n, 1) for n in (512, 1024, 2048)]
    + [("base", "transformers", "bfloat16", n, 1) for n in (512, 1024, 2048)]
    + [("base", "fast", "float32", 2048, 4)]
    + [("bert", "transformers", "float32", n, b) for n in (128, 512) for b in (1, 4)]
)
# ModernBERT-base shaped (sdpa attention, gated feed-forward blocks), and activation recomputation
# (pyattn.models.recompute), which attribute turns on when not even one step fits the budget
RECOMPUTE_POINTS = (
    [("modernbert", "sdpa", "float32", n, 1) for n in (512, 1024, 2048, 4096)]
    + [("modernbert", "sdpa", "float32", 1024, 2)]
    + [("modernbert", "sdpa+recompute", "float32", n, 1) for n in (1024, 2048, 4096)]
    + [("modernbert", "sdpa+recompute", "float32", 2048, 2)]
    + [("base", "fast+recompute", "float32", n, 1) for n in (1024, 2048, 4096)]
)
# not measured: base at 4,096 tokens with batch 4 (fast) or transformers' attention: about 20 GB
# and 12 GB predicted, more than this shared 24 GB machine can lend
QUICK_POINTS = DEMO_POINTS[:6] + [("base", "fast", "float32", 512, 1), ("base", "fast", "float32", 512, 2)]


def bert_base_shaped(seed: int = 0):
    """A BERT with bert-base-uncased's config (12 layers, hidden 768, 12 heads,
    intermediate 3072, 512 positions), random seeded weights, eager attention
    (as ``pyattn attribute`` runs it)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        max_position_embeddings=512, num_labels=2, attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def modernbert_base_shaped(tokens: int):
    """A ModernBERT with ModernBERT-base's config (22 layers, hidden 768,
    intermediate 1152 gated, 12 heads, local window 128, a global layer every
    third), random seeded weights, sdpa attention (as ``pyattn attribute``
    runs it): benchmarks/qk_models.py's model."""
    from qk_models import build

    return build("modernbert-base", max(tokens, 8192), tiny=False)


def measure_point(model_name: str, attention: str, dtype: str, tokens: int, batch: int) -> dict:
    """Runs in its own process: one batch of `batch` nodes on a document of
    `tokens` tokens; returns the measurement as a dict."""
    import resource

    import torch

    sys.path.insert(0, HERE)
    torch.set_num_threads(2)
    from attribution_baselines import PeakRSS, base_shaped_longformer

    from pyattn.attribution._path_integral import PathIntegrand
    from pyattn.attribution.memory import predicted_step_bytes
    from pyattn.demo import load_demo
    from pyattn.models.fast_attention import fast_attention_context
    from pyattn.models.inputs import encode

    from pyattn.models.recompute import recomputed_layers

    demo_model, tokenizer = load_demo()
    attention, _, recompute = attention.partition("+")
    if model_name == "base":
        model = base_shaped_longformer(seed=0)
    elif model_name == "bert":
        model = bert_base_shaped()
    elif model_name == "modernbert":
        model = modernbert_base_shaped(tokens)
    else:
        model = demo_model
    if model_name != "demo":
        del demo_model
    words = "the compiler checks every typed program and the network learns its weights from data".split()
    text = " ".join(words[i % len(words)] for i in range(tokens * 2))
    document = encode(model, tokenizer, text, max_length=tokens)
    autocast_dtype = None if dtype == "float32" else getattr(torch, dtype)
    device = torch.device("cpu")
    with fast_attention_context(model, attention == "fast"), (recomputed_layers(model) if recompute else nullcontext()):
        integrand = PathIntegrand(model, document, None, autocast_dtype, device)
        integrand([1.0])  # the target, and anything allocated once per process (thread pools, kernels)
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with PeakRSS(interval=0.002) as memory:  # trims malloc's free memory first: held is what stays
            start = time.perf_counter()
            alphas = [1.0 - i / max(batch, 2) for i in range(batch)]
            integrand(alphas)
            seconds = time.perf_counter() - start
    held = memory.start
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_bytes = max(memory.peak, _rss(), maxrss_after if maxrss_after > maxrss_before else 0)
    padded = integrand.difference.shape[1]
    return {
        "model": model_name,
        "attention": attention + ("+recompute" if recompute else ""),
        "dtype": dtype,
        "tokens": tokens,
        "padded_tokens": int(padded),
        "batch": batch,
        "held_bytes": held,
        "peak_bytes": peak_bytes,
        "step_bytes": peak_bytes - held,
        "predicted_step_bytes": int(predicted_step_bytes(model, tokens, batch, fast_attention=attention == "fast", autocast=autocast_dtype is not None,
                                                     recompute=bool(recompute))),
        "seconds": seconds,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "torch": torch.__version__,
    }


def measure(path: str, points) -> None:
    results = json.load(open(path)) if os.path.exists(path) else {"points": []}
    done = {(p["model"], p["attention"], p["dtype"], p["tokens"], p["batch"]) for p in results["points"]}
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for point in points:
        if point in done:
            continue
        proc = subprocess.run([sys.executable, __file__, "point", *map(str, point)], capture_output=True, text=True, env=env)
        if proc.returncode:
            print(f"{point}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results["points"].append(result)
        results["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results["machine"] = f"{os.cpu_count()} logical cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 1e9:.0f} GB"
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(path + ".tmp", path)
        print(f"{point}: step {result['step_bytes'] / 1e6:.0f} MB, predicted {result['predicted_step_bytes'] / 1e6:.0f} MB, held {result['held_bytes'] / 1e6:.0f} MB, {result['seconds']:.0f} s", flush=True)


def table(path: str) -> str:
    """The Markdown table of a measurement JSON, each measurement beside the
    model's prediction (recomputed from the current pyattn)."""
    import torch

    sys.path.insert(0, HERE)
    from attribution_baselines import PeakRSS, base_shaped_longformer

    from pyattn.attribution import memory_model_description, predicted_step_bytes
    from pyattn.demo import load_demo

    results = json.load(open(path))
    models = _models(results)
    lines = [
        "# Memory of one integrated-gradients batch",
        "",
        f"Generated by `benchmarks/memory_budget.py table {os.path.relpath(path, ROOT)}` from measurements of {results['date']} "
        f"({results['machine']}; torch {results['points'][0]['torch']}); one fresh process per row. "
        "`held`: the process's resident memory before the batch (Python, torch, the model, the document); "
        "`step`: peak RSS during one forward + backward of `batch` interpolation nodes, minus `held`; "
        "`predicted`: pyattn's per-step memory model (`pyattn.attribution.predicted_step_bytes`), which "
        "`attribute(memory_budget=...)` uses to choose the batch. base = Longformer with longformer-base-4096's config "
        "(12 layers, hidden 768, intermediate 3072, 12 heads, window 512), demo = the shipped demo model "
        "(3 layers, hidden 64, intermediate 128, 4 heads, windows 32/64/128), bert = BERT with bert-base-uncased's config "
        "(full attention, eager), modernbert = ModernBERT with ModernBERT-base's config (22 layers, hidden 768, gated intermediate 1152, "
        "12 heads, local window 128, sdpa attention as `pyattn attribute` runs it). `+recompute`: with activation recomputation "
        "(`pyattn.models.recompute`), which `attribute` turns on when not even one plain step fits the budget.",
        "",
        memory_model_description(),
        "",
        "| model | attention | dtype | tokens | padded | batch | held (MB) | step (MB) | predicted (MB) | predicted / step |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = float("inf")
    for p in results["points"]:
        attention, _, recompute = p["attention"].partition("+")
        predicted = predicted_step_bytes(models[p["model"]], p["tokens"], p["batch"], fast_attention=attention == "fast", autocast=p["dtype"] != "float32",
                                         recompute=bool(recompute))
        ratio = predicted / p["step_bytes"] if p["step_bytes"] > 0 else float("inf")
        worst = min(worst, ratio)
        lines.append(
            f"| {p['model']} | {p['attention']} | {p['dtype']} | {p['tokens']} | {p['padded_tokens']} | {p['batch']} | "
            f"{p['held_bytes'] / 1e6:.0f} | {p['step_bytes'] / 1e6:.0f} | {predicted / 1e6:.0f} | {ratio:.2f} |"
        )
    lines += ["", f"Smallest predicted / step: {worst:.2f} ({'the model upper-bounds every row' if worst >= 1 else 'SOME ROW EXCEEDS THE MODEL'}).", ""]
    del torch
    return "\n".join(lines)


def _models(results) -> dict:
    sys.path.insert(0, HERE)
    from attribution_baselines import PeakRSS, base_shaped_longformer

    from pyattn.demo import load_demo

    models = {"demo": load_demo()[0]}
    names = {p["model"] for p in results["points"]}
    if "base" in names:
        models["base"] = base_shaped_longformer(seed=0)
    if "bert" in names:
        models["bert"] = bert_base_shaped()
    if "modernbert" in names:
        models["modernbert"] = modernbert_base_shaped(0)
    return models


def fit(path: str) -> dict:
    """Coefficients of the memory model (pyattn.attribution.memory_features)
    from a measurement JSON: the linear program "non-negative coefficients
    (full attention's scores at least 1 float each), prediction >=
    measurement on every row (autocast rows: less the weights'
    half-precision copy), minimal sum of prediction / measurement", then x1.05."""
    import numpy as np
    from scipy.optimize import linprog

    from pyattn.attribution import memory_features
    from pyattn.attribution.memory import gated_mlp

    results = json.load(open(path))
    models = _models(results)
    configs = {name: model.config for name, model in models.items()}
    parameters = {name: sum(w.numel() for w in model.parameters()) for name, model in models.items()}
    gated = {name: gated_mlp(model) for name, model in models.items()}
    points = results["points"]
    names = list(memory_features(configs["demo"], 512, True))
    rows, needed, measured = [], [], []
    for p in points:
        attention, _, recompute = p["attention"].partition("+")
        f = memory_features(configs[p["model"]], p["tokens"], attention == "fast", bool(recompute), gated[p["model"]])
        rows.append([f[n] * p["batch"] for n in names] + [1.0])
        needed.append(p["step_bytes"] - (2.0 * parameters[p["model"]] if p["dtype"] != "float32" else 0.0))
        measured.append(p["step_bytes"])
    rows, needed, measured = np.array(rows), np.array(needed), np.array(measured, dtype=float)
    objective = (rows / measured[:, None]).sum(0)
    # full attention keeps at least its probabilities (one float per score) for the backward pass:
    # a floor, so that lengths beyond the measured ones are not predicted from the activations alone
    bounds = [(1.0, None) if n == "scores_full" else (0.0, None) for n in names] + [(0.0, None)]
    solution = linprog(objective, A_ub=-rows, b_ub=-needed, bounds=bounds, method="highs")
    if not solution.success:
        raise SystemExit(f"fit failed: {solution.message}")
    return {n: float(f"{c * 1.05:.4g}") for n, c in zip(names + ["step"], solution.x)}


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "point":
        model_name, attention, dtype, tokens, batch = sys.argv[2:7]
        print(json.dumps(measure_point(model_name, attention, dtype, int(tokens), int(batch))))
    elif command == "measure":
        measure(sys.argv[2], QUICK_POINTS if os.environ.get("PYATTN_BENCH_QUICK") else DEMO_POINTS + BASE_POINTS + RECOMPUTE_POINTS)
    elif command == "fit":
        print("MEMORY_COEFFICIENTS = " + json.dumps(fit(sys.argv[2]), indent=4).replace("}", "}"))
    elif command == "table":
        print(table(sys.argv[2]))
    else:
        sys.exit(__doc__)
