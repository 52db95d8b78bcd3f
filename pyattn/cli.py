"""The ``pyattn`` command.

``pyattn demo`` runs the main job on the shipped default, the demo model and
demo documents: for each document its prediction, token attributions
(Layer Integrated Gradients, steps chosen for 1% completeness), attention
received (final layer and all layers, streamed), the top tokens by each and
their overlap; and a check of the kernels against the dense route.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _top(values, tokens, k: int) -> list[tuple[int, str]]:
    import numpy as np

    order = np.argsort(-np.asarray(values))[:k]
    return [(int(i), tokens[int(i)].replace("Ġ", "")) for i in order]


def demo(args: argparse.Namespace) -> int:
    import torch

    import pyattn
    from pyattn.demo import LABELS

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = pyattn.load_demo()
    documents = [d for d in pyattn.demo_documents("test") if len(d.text.split()) <= args.max_words][: args.documents]
    print(f"pyattn {pyattn.__version__}: demo model ({model.config.num_hidden_layers} layers x "
          f"{model.config.num_attention_heads} heads, windows {model.config.attention_window}), "
          f"{len(documents)} demo documents\n")
    failures = 0
    for number, document in enumerate(documents, 1):
        start = time.perf_counter()
        scores = pyattn.attribute(model, tokenizer, document.text, device="cpu")
        attribution_s = time.perf_counter() - start
        start = time.perf_counter()
        attention = pyattn.attention(model, tokenizer, document.text, stream=True)
        attention_s = time.perf_counter() - start
        final = attention.received.final_layer[0].numpy()
        all_layers = attention.received.all_layers[0].numpy()
        n = len(scores.tokens)
        k = args.top
        by_attribution = _top(scores.scores, scores.tokens, k)
        by_attention = _top(final, scores.tokens, k)
        shared = {i for i, _ in by_attribution} & {i for i, _ in by_attention}
        print(f"document {number}: {n} tokens, label '{LABELS[document.label]}', predicted "
              f"'{LABELS[scores.predicted_label]}' (p = {scores.probabilities.max():.3f})")
        print(f"  attribution: {scores.n_steps} steps, {scores.model_evaluations} model evaluations, "
              f"completeness error {scores.relative_error:.2%}{'' if scores.converged else ' (step cap reached)'}, {attribution_s:.1f} s")
        print(f"  attention received: {attention_s * 1e3:.0f} ms for all layers (streamed)")
        print(f"  top-{k} by attribution:        {', '.join(t for _, t in by_attribution)}")
        print(f"  top-{k} by attention (final):  {', '.join(t for _, t in by_attention)}")
        print(f"  top-{k} by attention (all):    {', '.join(t for _, t in _top(all_layers, scores.tokens, k))}")
        print(f"  in both top-{k} lists (final layer): {len(shared)}\n")
        failures += not scores.converged

    # The kernel against the dense route on the last document: every row of
    # the attention sums to 1, so the column sums are the dense sums.
    collected = pyattn.attention(model, tokenizer, documents[-1].text)
    dense = collected.dense(layer=-1)
    worst = float((dense.sum(2).sum(1)[0] - collected.received.final_layer[0]).abs().max())
    heads, n = dense.shape[1], dense.shape[-1]
    rows_ok = torch.allclose(dense.sum(-1), torch.ones(1, heads, n), atol=1e-4)
    print(f"checks: rows of the dense attention sum to 1: {'ok' if rows_ok else 'FAILED'}; "
          f"max |dense route - kernel| on the final layer: {worst:.1e}")
    return 0 if rows_ok and worst < 1e-3 * n else 1


def _load_model(name: str, tokenizer_name: str | None, trust_remote_code: bool, device: str | None):
    """`demo` is the shipped demo model; anything else goes to transformers
    (a local path or a hub name), with remote code off unless asked for."""
    import pyattn

    if name == "demo":
        model, tokenizer = pyattn.load_demo()
    else:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=trust_remote_code).eval()
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise SystemExit(f"pyattn: cannot load model {name!r}: {error}")
    if device:
        model = model.to(device)
    return model, tokenizer


def attribute_command(args: argparse.Namespace) -> int:
    import pyattn
    from pyattn.dataset import DataError, load_documents, run_attribution
    from pyattn.store import ResultsStore, StoreError

    steps = args.steps if args.steps == "auto" else int(args.steps)
    settings = {
        "n_steps": steps,
        "target": args.target,
        "max_length": args.max_length,
        "tol": args.tol,
        "text_column": args.text_column,
        "label_column": args.label_column,
        "id_column": args.id_column,
        "data": os.path.abspath(args.data) if os.path.exists(args.data) else args.data,
    }
    try:
        documents = load_documents(args.data, args.text_column, args.label_column, args.id_column)
        if args.limit:
            documents = documents[: args.limit]
        manifest = {
            "model": args.model,
            "tokenizer": args.tokenizer or args.model,
            "settings": settings,
            "pyattn_version": pyattn.__version__,
            "command": "attribute",
        }
        store = ResultsStore.create(args.out, manifest, resume=args.resume, force=args.force)
    except (DataError, StoreError) as error:
        print(f"pyattn: {error}", file=sys.stderr)
        return 2
    model, tokenizer = _load_model(args.model, args.tokenizer, args.trust_remote_code, args.device)
    kwargs = {"n_steps": steps, "target": args.target, "max_length": args.max_length, "tol": args.tol,
              "internal_batch_size": args.batch_size, "device": args.device}
    try:
        summary = run_attribution(model, tokenizer, documents, store, kwargs, shard_size=args.shard_size, progress=not args.quiet)
    except (DataError, StoreError) as error:
        print(f"pyattn: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"{summary.processed} documents attributed in {summary.seconds:.1f} s "
              f"({summary.already_done} already done, {len(summary.skipped)} skipped) -> {store.path}")
        if summary.not_converged:
            print(f"{summary.not_converged} documents did not reach the completeness tolerance within the step cap")
        for entry in summary.skipped[: 20 if not args.verbose else None]:
            print(f"  skipped {entry['doc_id']} (row {entry['index']}): {entry['reason']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyattn", description="Attributions vs. attention for long-document classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    attribute_parser = commands.add_parser("attribute", help="attribute every document of a dataset into a resumable results store")
    attribute_parser.add_argument("--model", required=True, help="a model path or name, or 'demo' for the shipped demo model")
    attribute_parser.add_argument("--tokenizer", help="tokenizer path or name (default: the model's)")
    attribute_parser.add_argument("--data", required=True, help="CSV, JSONL or Parquet file, or a Hugging Face dataset name:split")
    attribute_parser.add_argument("--out", required=True, help="results directory (created; an existing store needs --resume)")
    attribute_parser.add_argument("--text-column", default="text")
    attribute_parser.add_argument("--label-column", default="label", help="label column ('' for none)")
    attribute_parser.add_argument("--id-column", default=None, help="unique document ids (default: row numbers)")
    attribute_parser.add_argument("--steps", default="auto", help='integration steps, or "auto" (default)')
    attribute_parser.add_argument("--tol", type=float, default=0.01, help="completeness tolerance for --steps auto (default 0.01)")
    attribute_parser.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted class)")
    attribute_parser.add_argument("--max-length", type=int, default=None)
    attribute_parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU when there is one)")
    attribute_parser.add_argument("--batch-size", type=int, default=None, help="steps per forward pass (default: fitted to free memory)")
    attribute_parser.add_argument("--shard-size", type=int, default=4, help="documents per results shard (default 4)")
    attribute_parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    attribute_parser.add_argument("--resume", action="store_true", help="continue a run in an existing results store")
    attribute_parser.add_argument("--force", action="store_true", help="resume despite different settings, or use a non-empty --out")
    attribute_parser.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model's own code (off by default)")
    attribute_parser.add_argument("--quiet", action="store_true")
    attribute_parser.add_argument("--verbose", action="store_true")
    attribute_parser.set_defaults(run=attribute_command)
    demo_parser = commands.add_parser("demo", help="the main job on the shipped demo model and documents")
    demo_parser.add_argument("--documents", type=int, default=3, help="how many demo documents (default 3)")
    demo_parser.add_argument("--max-words", type=int, default=1200, help="take documents of at most this many words (default 1200)")
    demo_parser.add_argument("--top", type=int, default=8, help="tokens to list per ranking (default 8)")
    demo_parser.set_defaults(run=demo)
    args = parser.parse_args(argv)
    if args.command == "attribute":
        args.label_column = args.label_column or None
        if args.steps != "auto" and not args.steps.isdigit():
            parser.error(f'--steps must be "auto" or a positive integer, got {args.steps!r}')
    if args.command == "demo" and args.documents < 1:
        parser.error(f"--documents must be at least 1, got {args.documents}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
