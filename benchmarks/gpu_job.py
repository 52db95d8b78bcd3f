"""The main job on a GPU, run by `make gpu-check` (benchmarks/gpu_check.sh):
`pyattn attribute` over 16 documents of 4,096 tokens on a Longformer with
longformer-base-4096's config, beside the seeds' notebooks' method on 2 of the
same documents, each stage in its own process (so one hang or crash costs one
stage) writing one JSON file.

    python benchmarks/gpu_job.py prepare WORK [--documents 16] [--tokens 4096] [--sharpen 300]
    python benchmarks/gpu_job.py cli WORK --json OUT.json [--autocast bfloat16]
    python benchmarks/gpu_job.py notebook WORK --json OUT.json [--documents 2]
    python benchmarks/gpu_job.py profile WORK --json OUT.json [--autocast bfloat16]

- ``prepare`` (CPU): the base-shaped model (benchmarks/attribution_baselines.
  base_shaped_longformer, random weights, seed 0) whose two-class head's
  output layer is replaced by one that reads the direction in which the
  first document's pooled features differ from its baseline's, scaled so
  that there the logit difference runs from -S to +S (``--sharpen`` S,
  default 6): the probability along the path is a sigmoid step from 0.0025
  to 0.9975, steep enough that the automatic rule needs more than its first
  5 nodes, neither end saturated, logits small (see ``_sharpen_about``).
  Saved with the demo tokenizer; and
  ``--documents`` slices of the demo corpus of ``--tokens`` - 2 tokens each
  (+ <s>, </s>) as a CSV.
- ``cli``: ``pyattn attribute --model WORK/model --data WORK/documents.csv``
  with its defaults (``--steps auto``, tol 0.01, the batch that the memory
  budget allows, attention streamed and stored) on ``cuda``, whole command
  timed; first one warm-up document into a throwaway store (CUDA context,
  cuBLAS handles), so the timed run is the steady rate. Records each
  document's evaluations, nodes, completeness errors, and the peak GPU memory.
- ``notebook``: the seeds' notebooks' method (Captum LayerIntegratedGradients,
  50 Gauss-Legendre steps, internal batch size 2, transformers' attention,
  float32) on the first ``--documents`` documents.
- ``profile``: one document's attribution (the same call the CLI makes) under
  torch.profiler: GPU kernel time in matrix products (GEMM kernels), in
  attention kernels (SDPA) and in everything else, and how much of the wall
  time the GPU was busy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

GEMM_MARKERS = ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "dot_kernel", "splitk")
ATTENTION_MARKERS = ("fmha", "flash", "attention", "efficient_attention", "cudnn_generated_fort_native_sdpa")


def _paths(work: str) -> tuple[str, str]:
    return os.path.join(work, "model"), os.path.join(work, "documents.csv")


def _tiny_longformer():
    """For rehearsals on a CPU: a Longformer of the same family at toy size
    (2 layers, hidden 64, window 32), the demo tokenizer's vocabulary."""
    import torch
    from transformers import LongformerConfig, LongformerForSequenceClassification

    torch.manual_seed(0)
    config = LongformerConfig(vocab_size=50265, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                              attention_window=[32, 32], max_position_embeddings=4098, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                              type_vocab_size=1, num_labels=2)
    return LongformerForSequenceClassification(config).eval()


def prepare(work: str, documents: int, tokens: int, sharpen: float, tiny: bool = False) -> dict:
    import pandas as pd

    from attribution_baselines import base_shaped_longformer, corpus_ids
    from pyattn.demo import load_demo

    model_dir, data = _paths(work)
    _, tokenizer = load_demo()
    model = _tiny_longformer() if tiny else base_shaped_longformer(seed=0)
    body = tokens - 2
    ids = corpus_ids(tokenizer, body * documents)
    if len(ids) < body * documents:  # the corpus is shorter than asked: cycle it
        ids = (ids * (body * documents // max(len(ids), 1) + 1))[: body * documents]
    texts = [tokenizer.decode(ids[i * body : (i + 1) * body]) for i in range(documents)]
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    features, ends = _pooled_features(model, tokenizer, texts[0])
    _sharpen_about(model, features, sharpen)
    after = _logit_differences(model, tokenizer, texts[0])
    model.config.id2label = {0: "first", 1: "second"}
    model.config.label2id = {"first": 0, "second": 1}
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return {"stage": "prepare", "documents": documents, "tokens": lengths, "sharpen": sharpen, "tiny_model": tiny,
            "logit_difference_before": ends, "logit_difference_after": after}


def _pooled_features(model, tokenizer, text):
    """The classification head's last input (after its dense layer and tanh)
    at the document and at its baseline (pyattn's own inputs), float32 on
    the CPU, and logit[1] - logit[0] at both."""
    import torch

    from pyattn.models.inputs import encode

    document = encode(model, tokenizer, text)
    extra = {"attention_mask": document.attention_mask, "position_ids": document.position_ids}
    if document.global_attention_mask is not None:
        extra["global_attention_mask"] = document.global_attention_mask
    seen = []
    handle = model.classifier.out_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0][0].detach().clone()))
    try:
        with torch.no_grad():
            logits = [model(input_ids=ids, **extra).logits[0] for ids in (document.input_ids, document.baseline_ids)]
    finally:
        handle.remove()
    return seen, [float(z[1] - z[0]) for z in logits]


def _logit_differences(model, tokenizer, text) -> list[float]:
    return _pooled_features(model, tokenizer, text)[1]


def _sharpen_about(model, features, half_range: float) -> None:
    """A two-class head that reads the direction in which the calibration
    document's pooled features differ from its baseline's: logits
    (-d/2, d/2) with d = 2 S w.(p - m) / |w|^2, w = p_input - p_baseline,
    m their midpoint, so d runs from -S at the baseline to +S at the input.
    The probability along the path is then a sigmoid step of that
    steepness with neither end saturated, and the logits stay small (a
    plain multiplication of a random head by hundreds saturates both ends,
    leaves a zero gap, and puts logits of 50 into bfloat16, whose spacing
    there is 0.25)."""
    import torch

    at_input, at_baseline = features
    w = at_input - at_baseline
    middle = (at_input + at_baseline) / 2
    row = half_range * w / float(w @ w)
    head = model.classifier.out_proj
    with torch.no_grad():
        head.weight[1].copy_(row)
        head.weight[0].copy_(-row)
        head.bias[1] = -float(row @ middle)
        head.bias[0] = float(row @ middle)


DEVICE = "cuda"  # --device cpu rehearses every stage on the CPU (tiny sizes)


def _gpu_memory_reset():
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _sync():
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _peak() -> int:
    import torch

    return int(torch.cuda.max_memory_allocated()) if DEVICE == "cuda" else 0


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (rehearsal)"


def run_cli(work: str, autocast: str | None) -> dict:
    import shutil

    import torch

    from pyattn.cli import main as cli
    from pyattn.pipeline.store import ResultsStore

    model_dir, data = _paths(work)
    extra = ["--autocast", autocast] if autocast else []
    common = ["attribute", "--model", model_dir, "--data", data, "--device", DEVICE, "--label-column", "", "--quiet", *extra]
    warm = os.path.join(work, f"warm-{autocast or 'float32'}")
    out = os.path.join(work, f"store-{autocast or 'float32'}")
    for folder in (warm, out):
        shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    if cli([*common, "--out", warm, "--limit", "1"]):
        raise SystemExit("the warm-up run of pyattn attribute failed")
    warm_seconds = time.perf_counter() - start
    _gpu_memory_reset()
    start = time.perf_counter()
    code = cli([*common, "--out", out])
    _sync()
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"pyattn attribute exited with {code}")
    documents = []
    for _, record in ResultsStore.open(out).records().iterrows():
        documents.append({
            "tokens": len(record["tokens"]), "evaluations": int(record["model_evaluations"]), "n_steps": int(record["n_steps"]),
            "relative_error": float(record["relative_error"]), "float32_relative_error": float(record["float32_relative_error"]),
            "converged": bool(record["converged"]),
        })
    return {
        "stage": "cli", "autocast": autocast, "wall_seconds": wall, "warm_up_seconds": warm_seconds,
        "documents": documents, "documents_per_hour": 3600 * len(documents) / wall,
        "peak_gpu_bytes": _peak(), "device": _device_name(), "torch": torch.__version__,
    }


def run_notebook(work: str, n_documents: int) -> dict:
    import pandas as pd
    import torch
    from captum.attr import LayerIntegratedGradients

    from attribution_baselines import _forward
    from pyattn.models.inputs import embedding_layer, encode
    from pyattn.pipeline import load_model

    model_dir, data = _paths(work)
    model, tokenizer = load_model(model_dir, device=DEVICE)
    model = model.to(DEVICE).eval()
    texts = list(pd.read_csv(data)["text"])[:n_documents]
    documents = []
    torch.set_grad_enabled(True)

    def one(text):
        document = encode(model, tokenizer, text)
        has_global = document.global_attention_mask is not None
        move = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
        extra = (move(document.attention_mask), move(document.position_ids)) + ((move(document.global_attention_mask),) if has_global else ())
        forward = _forward(model, has_global)
        ids, baseline = move(document.input_ids), move(document.baseline_ids)
        with torch.no_grad():
            probabilities = forward(ids, *extra)[0]
            base = forward(baseline, *extra)[0]
        target = int(probabilities.argmax())
        gap = float(probabilities[target] - base[target])
        lig = LayerIntegratedGradients(forward, embedding_layer(model))
        attributions, delta = lig.attribute(ids, baselines=baseline, target=target, additional_forward_args=extra, n_steps=50,
                                            method="gausslegendre", internal_batch_size=2, return_convergence_delta=True)
        _sync()
        return abs(float(delta)) / abs(gap) if gap else float("inf"), int(ids.shape[1])

    one(texts[0][:2000])  # warm-up on a short piece (CUDA context, cuBLAS)
    _gpu_memory_reset()
    start = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        error, n = one(text)
        documents.append({"tokens": n, "evaluations": 2 + 2 + 50 + 2, "n_steps": 50, "relative_error": error,
                          "seconds": time.perf_counter() - t0})
    wall = time.perf_counter() - start
    return {"stage": "notebook", "wall_seconds": wall, "documents": documents, "documents_per_hour": 3600 * len(documents) / wall,
            "peak_gpu_bytes": _peak(), "device": _device_name()}


def run_profile(work: str, autocast: str | None) -> dict:
    import pandas as pd
    import torch
    from torch.profiler import ProfilerActivity, profile

    import pyattn
    from pyattn.pipeline import load_model

    model_dir, data = _paths(work)
    model, tokenizer = load_model(model_dir, device=DEVICE)
    text = list(pd.read_csv(data)["text"])[0]
    kwargs = {"device": DEVICE, "autocast": autocast or False}
    pyattn.attribute(model, tokenizer, text[:3000], n_steps=5, **kwargs)  # warm-up
    _sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        result = pyattn.attribute(model, tokenizer, text, **kwargs)
        _sync()
        wall = time.perf_counter() - start
    kernels = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    by_name: dict[str, float] = {}
    intervals = []
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        duration = event.time_range.elapsed_us()
        name = event.name.lower()
        if "memcpy" in name or "memset" in name:
            kind = "other"
        elif any(m in name for m in GEMM_MARKERS):
            kind = "gemm"
        elif any(m in name for m in ATTENTION_MARKERS):
            kind = "attention"
        else:
            kind = "other"
        kernels[kind] += duration
        by_name[event.name[:90]] = by_name.get(event.name[:90], 0.0) + duration
        intervals.append((event.time_range.start, event.time_range.end))
    intervals.sort()
    busy, current = 0.0, None
    for s, e in intervals:  # union of kernel intervals: the time the GPU was busy
        if current is None or s > current[1]:
            if current is not None:
                busy += current[1] - current[0]
            current = [s, e]
        else:
            current[1] = max(current[1], e)
    if current is not None:
        busy += current[1] - current[0]
    total = sum(kernels.values())
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return {
        "stage": "profile", "autocast": autocast, "wall_seconds": wall, "tokens": len(result.scores),
        "evaluations": int(result.model_evaluations), "n_steps": int(result.n_steps),
        "kernel_us": kernels, "kernel_total_us": total, "gpu_busy_us": busy,
        "gemm_share": kernels["gemm"] / total if total else float("nan"),
        "attention_share": kernels["attention"] / total if total else float("nan"),
        "busy_share_of_wall": busy / (wall * 1e6), "top_kernels": top,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["prepare", "cli", "notebook", "profile"])
    parser.add_argument("work")
    parser.add_argument("--json", default=None)
    parser.add_argument("--documents", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--sharpen", type=float, default=6.0,
                        help="the logit difference runs from -S to +S between baseline and input on the first document")
    parser.add_argument("--autocast", choices=["bfloat16", "float16"], default=None)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a rehearsal of the same code on the CPU")
    parser.add_argument("--tiny", action="store_true", help="prepare: a toy Longformer instead of the base-shaped one (rehearsals)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    os.makedirs(args.work, exist_ok=True)
    if args.stage == "prepare":
        result = prepare(args.work, args.documents or 16, args.tokens, args.sharpen, args.tiny)
    else:
        import torch

        if DEVICE == "cuda" and not torch.cuda.is_available():
            print(f"gpu_job.py {args.stage} needs a CUDA device", file=sys.stderr)
            return 2
        if args.stage == "cli":
            result = run_cli(args.work, args.autocast)
        elif args.stage == "notebook":
            result = run_notebook(args.work, args.documents or 2)
        else:
            result = run_profile(args.work, args.autocast)
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text if len(text) < 4000 else text[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
