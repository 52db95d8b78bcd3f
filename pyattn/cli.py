"""The ``pyattn`` command.

``pyattn demo`` runs the main job on the shipped default, the demo model and
demo documents: for each document its prediction, token attributions
(Layer Integrated Gradients, steps chosen for 1% completeness), attention
received (final layer and all layers, streamed), the top tokens by each and
their overlap; and a check of the kernels against the dense route.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyattn", description="Attributions vs. attention for long-document classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="the main job on the shipped demo model and documents")
    demo_parser.add_argument("--documents", type=int, default=3, help="how many demo documents (default 3)")
    demo_parser.add_argument("--max-words", type=int, default=1200, help="take documents of at most this many words (default 1200)")
    demo_parser.add_argument("--top", type=int, default=8, help="tokens to list per ranking (default 8)")
    demo_parser.set_defaults(run=demo)
    args = parser.parse_args(argv)
    if args.command == "demo" and args.documents < 1:
        parser.error(f"--documents must be at least 1, got {args.documents}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
