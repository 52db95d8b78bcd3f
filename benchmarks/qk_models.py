"""Long-context attention received by the q/k route, against eager attention
streamed layer by layer and a plain sdpa forward (issue 18's benchmark).

Two randomly initialised (seeded) sequence classifiers with the shapes of
real ones: a ModernBERT with ModernBERT-base's config (22 layers, hidden 768,
12 heads, local window 128, a global layer every third) and a decoder
classifier with Qwen2-0.5B's config (24 layers, hidden 896, 14 heads, 2
key-value heads). One document of N tokens, CPU, float32. Each (model, N,
mode) runs in its own child process: build the model, warm up on a short
input, time the long one; the child reports its wall time and its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the whole process: weights,
activations and whatever the mode adds).

Modes:
- ``sdpa forward``: ``model(input_ids, attention_mask)`` under no_grad, the
  model's own attention (sdpa): the floor.
- ``qk route``: ``pyattn.attention_from_inputs(model, ids, route="qk",
  per_head=True)``: the same forward, each layer's q and k reduced at once
  by ``pyattn.kernels.ops.attention_received_qk``.
- ``eager streamed``: the model switched to eager attention, each layer's
  probabilities ``(B, H, N, N)`` reduced to column sums by a forward hook and
  dropped (no ``output_attentions``): the best the eager route can do. Run
  only where its estimated peak (3 x one layer's probabilities) fits in
  ``--eager-limit-gb``; otherwise recorded as skipped with the estimate.

Goal (issue 18): q/k route peak within 1.2x of the sdpa forward, time within 2x.

Full run (on a quiet machine; about 15 minutes on 2 cores, 2026-12-05):
    OMP_NUM_THREADS=2 python benchmarks/qk_models.py
Check at tiny size (seconds; writes to a temporary folder, not results/):
    OMP_NUM_THREADS=1 python benchmarks/qk_models.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(os.path.dirname(HERE), "README.md")
MODES = ("sdpa forward", "qk route", "eager streamed")
MODELS = ("modernbert-base", "qwen2-0.5b")
START, END = "<!-- long_context:start -->", "<!-- long_context:end -->"


def build(name: str, n: int, tiny: bool):
    """A seeded random classifier with the named model's config (tiny: the
    same architecture, 2-3 layers of width 64)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if name == "modernbert-base":
        shape = dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12, vocab_size=50368)
        if tiny:
            shape = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, vocab_size=512)
        config = tf.ModernBertConfig(**shape, local_attention=128 if not tiny else 16, global_attn_every_n_layers=3,
                                     max_position_embeddings=max(8192, n), pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                     cls_token_id=1, sep_token_id=2, num_labels=2)
        model = tf.ModernBertForSequenceClassification(config)
    else:
        shape = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                     vocab_size=151936)
        if tiny:
            shape = dict(hidden_size=56, intermediate_size=96, num_hidden_layers=2, num_attention_heads=14, num_key_value_heads=2, vocab_size=512)
        config = tf.Qwen2Config(**shape, max_position_embeddings=max(32768, n), rope_theta=1e6, use_sliding_window=False,
                                pad_token_id=0, num_labels=2, use_cache=False)
        model = tf.Qwen2ForSequenceClassification(config)
    model.eval()
    if model.config._attn_implementation != "sdpa":
        model.set_attn_implementation("sdpa")
    return model


def _eager_streamed(model, ids):
    """Eager attention, each layer's probabilities column-summed by a hook
    and dropped: (L, B, H, N)."""
    import torch

    from pyattn.models.qk_capture import QK_ARCHITECTURES

    classes = QK_ARCHITECTURES[model.config.model_type].attention_classes
    received = []

    def hook(module, args, output):
        received.append(output[1].float().sum(2))  # (B, H, N): every row is real here
        return (output[0], None) + tuple(output[2:])

    model.set_attn_implementation("eager")
    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ in classes]
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for handle in handles:
            handle.remove()
        model.set_attn_implementation("sdpa")
    return torch.stack(received)


def child(name: str, mode: str, n: int, tiny: bool) -> dict:
    import torch

    from pyattn.model_attention import attention_from_inputs

    model = build(name, n, tiny)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (1, n), generator=generator)

    def run(input_ids):
        mask = torch.ones_like(input_ids)
        if mode == "sdpa forward":
            with torch.no_grad():
                return model(input_ids=input_ids, attention_mask=mask).logits
        if mode == "qk route":
            return attention_from_inputs(model, input_ids, attention_mask=mask, route="qk", per_head=True).received.per_layer
        return _eager_streamed(model, input_ids)

    run(ids[:, : min(n, 256)])  # warm-up: code, thread pools, allocator
    start = time.perf_counter()
    out = run(ids)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"model": name, "mode": mode, "tokens": n, "seconds": seconds, "peak_rss_bytes": peak, "output_shape": list(out.shape)}


def eager_estimate(name: str, n: int, tiny: bool) -> int:
    """Bytes eager attention holds at its peak in one layer: scores,
    probabilities and a masked copy, (H, N, N) float32 each."""
    heads = {"modernbert-base": 12, "qwen2-0.5b": 14}[name] if not tiny else {"modernbert-base": 4, "qwen2-0.5b": 14}[name]
    return 3 * heads * n * n * 4


def measure(name: str, mode: str, n: int, tiny: bool, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", name, mode, str(n)] + (["--tiny"] if tiny else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        return {"model": name, "mode": mode, "tokens": n, "error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _gib(nbytes) -> str:
    return f"{nbytes / 2**30:,.2f} GiB"


def markdown(report: dict) -> str:
    lines = [
        "<!-- generated by benchmarks/qk_models.py from long_context.json; do not edit by hand -->",
        "",
        f"Machine: {report['machine']}; run of {report['when']}{' (TINY check run: not the real shapes)' if report['tiny'] else ''}.",
        "Peak RSS is the whole child process (weights included); each cell its own process. Goal: q/k route within 1.2x "
        "of the sdpa forward's peak and 2x its time.",
        "",
        "| model | N | mode | time | peak RSS | x sdpa time | x sdpa peak |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    rows = report["rows"]
    for row in rows:
        floor = next((r for r in rows if r["model"] == row["model"] and r["tokens"] == row["tokens"] and r["mode"] == "sdpa forward" and "seconds" in r), None)
        if "seconds" not in row:
            why = row.get("skipped") or f"failed: {row.get('error')}"
            lines.append(f"| {row['model']} | {row['tokens']:,} | {row['mode']} | {why} | | | |")
            continue
        ratio_t = f"{row['seconds'] / floor['seconds']:.2f}" if floor else ""
        ratio_m = f"{row['peak_rss_bytes'] / floor['peak_rss_bytes']:.2f}" if floor else ""
        lines.append(f"| {row['model']} | {row['tokens']:,} | {row['mode']} | {row['seconds']:.3g} s | {_gib(row['peak_rss_bytes'])} | {ratio_t} | {ratio_m} |")
    lines += paper_estimate(report)
    return "\n".join(lines) + "\n"


PAPER_TOKENS = 32768


def paper_estimate(report: dict) -> list[str]:
    """Peak memory of the decoder at 32,768 tokens, on paper: each mode's
    measured peak at the longest length plus its measured growth per token
    (the slope between the two lengths) times the tokens added; eager's one
    layer of probabilities beside it (3 x H x N^2 float32, as above)."""
    rows = [r for r in report["rows"] if r["model"] == "qwen2-0.5b" and "seconds" in r]
    lengths = sorted({r["tokens"] for r in rows})
    if len(lengths) < 2 or report["tiny"]:
        return []
    short, long = lengths[0], lengths[-1]
    out = ["", f"Decoder (qwen2-0.5b) at {PAPER_TOKENS:,} tokens, on paper: the peak at {long:,} plus the measured growth per token "
           f"between {short:,} and {long:,} times the {PAPER_TOKENS - long:,} tokens added.", "",
           "| mode | growth per token | peak at 32,768 (estimate) |", "|---|---:|---:|"]
    for mode in ("sdpa forward", "qk route"):
        by_n = {r["tokens"]: r["peak_rss_bytes"] for r in rows if r["mode"] == mode}
        if short in by_n and long in by_n:
            slope = (by_n[long] - by_n[short]) / (long - short)
            out.append(f"| {mode} | {slope / 1024:,.0f} KiB | {_gib(by_n[long] + slope * (PAPER_TOKENS - long))} |")
    out.append(f"| eager (one layer's probabilities alone) | | {_gib(eager_estimate('qwen2-0.5b', PAPER_TOKENS, False))} |")
    return out


def update_readme(table: str, start: str = START, end: str = END) -> bool:
    """Put the table between the README's markers (default long_context's)."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(README, "w", encoding="utf-8") as handle:
        handle.write(head + start + "\n" + table + end + tail)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=None, help="lengths (default 2048 8192; --tiny: 64 192)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--eager-limit-gb", type=float, default=12.0, help="skip eager where its estimated peak is above this (default 12)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per child at most")
    parser.add_argument("--tiny", action="store_true", help="tiny models and lengths: checks the script, measures nothing real")
    parser.add_argument("--out", default=None, help="folder for long_context.json/.md (default: benchmarks/results; --tiny: a temporary folder)")
    parser.add_argument("--render", metavar="JSON", default=None, help="only rewrite the .md (and README table) from a long_context.json")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, mode, n = args.child
        print(json.dumps(child(name, mode, int(n), args.tiny)))
        return
    if args.render:
        with open(args.render) as handle:
            report = json.load(handle)
        table = markdown(report)
        with open(os.path.join(os.path.dirname(os.path.abspath(args.render)), "long_context.md"), "w") as handle:
            handle.write(table)
        if not report["tiny"]:
            update_readme(table)
        print(table)
        return
    tokens = args.tokens or ([64, 192] if args.tiny else [2048, 8192])
    out = args.out or (tempfile.mkdtemp(prefix="long_context-") if args.tiny else RESULTS)
    rows = []
    for name in args.models:
        for n in tokens:
            for mode in args.modes:
                if mode == "eager streamed" and eager_estimate(name, n, args.tiny) > args.eager_limit_gb * 2**30:
                    rows.append({"model": name, "mode": mode, "tokens": n,
                                 "skipped": f"skipped: eager needs about {_gib(eager_estimate(name, n, args.tiny))} per layer"})
                else:
                    rows.append(measure(name, mode, n, args.tiny, args.timeout))
                print(json.dumps(rows[-1]), flush=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
              "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tiny": args.tiny, "rows": rows}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "long_context.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    table = markdown(report)
    with open(os.path.join(out, "long_context.md"), "w") as handle:
        handle.write(table)
    if not args.tiny and out == RESULTS:
        update_readme(table)
    print(f"-> {os.path.join(out, 'long_context.md')}")


if __name__ == "__main__":
    main()
