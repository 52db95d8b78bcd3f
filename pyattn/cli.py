"""The ``pyattn`` command.

``pyattn demo`` runs the compiled core end to end on a seeded, randomly
initialised Longformer classifier (no download): attention received per layer
from the model's banded output, the original notebooks' summaries (final layer,
all layers) and layer ranges, checked against the dense route. The shipped demo
model and real documents, attributions and reports build on this.
"""

from __future__ import annotations

import argparse
import sys
import time


def _demo_model(layers: int, seed: int):
    from transformers import LongformerConfig, LongformerForSequenceClassification

    import torch

    torch.manual_seed(seed)
    windows = [32, 64, 64, 128, 128, 128][:layers]
    config = LongformerConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=len(windows),
        num_attention_heads=4,
        intermediate_size=128,
        attention_window=windows,
        max_position_embeddings=8192 + 2,
        pad_token_id=1,
        num_labels=2,
    )
    return LongformerForSequenceClassification(config).eval()


def demo(args: argparse.Namespace) -> int:
    import torch

    import pyattn

    model = _demo_model(args.layers, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    n = args.length
    input_ids = torch.randint(3, model.config.vocab_size, (1, n), generator=generator)
    input_ids[0, 0] = 0  # <s>, global by the model's CLS default
    global_attention_mask = torch.zeros_like(input_ids)
    global_attention_mask[0, 0] = 1
    print(f"pyattn {pyattn.__version__}: seeded random Longformer, {model.config.num_hidden_layers} layers x "
          f"{model.config.num_attention_heads} heads, windows {model.config.attention_window}, one document of {n} tokens")

    start = time.perf_counter()
    with torch.no_grad():
        output = model(input_ids=input_ids, global_attention_mask=global_attention_mask, output_attentions=True)
    forward_s = time.perf_counter() - start
    probabilities = output.logits.softmax(-1)[0]

    start = time.perf_counter()
    received = pyattn.layer_attention_received(output, global_attention_mask=global_attention_mask)
    kernel_s = time.perf_counter() - start
    heads = model.config.num_attention_heads
    half = received.num_layers // 2

    print(f"forward with attentions: {forward_s:.2f} s; attention received, all layers: {kernel_s * 1e3:.1f} ms")
    print(f"prediction: class {int(probabilities.argmax())} (p = {float(probabilities.max()):.3f})\n")
    print("layer  window  total received  top-5 positions by attention received")
    for layer in range(1, received.num_layers + 1):
        row = received.select(layer)[0]
        top = row.topk(5).indices.tolist()
        print(f"{layer:>5}  {model.config.attention_window[layer - 1]:>6}  {float(row.sum()):>14.1f}  {top}")
    summaries = {
        "final layer": received.final_layer[0],
        "all layers": received.all_layers[0],
        f"layers 1-{half}": received.layer_range(1, half)[0],
        f"layers {half + 1}-{received.num_layers}": received.layer_range(half + 1, received.num_layers)[0],
    }
    print()
    for name, values in summaries.items():
        print(f"{name:>12}: top-5 positions {values.topk(5).indices.tolist()}")

    # Every valid row of the dense matrix sums to 1, so each layer's total is
    # (heads x tokens); and the column sums equal the dense route's.
    dense = pyattn.layer_to_dense(output, global_attention_mask=global_attention_mask, layer=-1)
    dense_route = dense.sum(2).sum(1)[0]
    worst = float((dense_route - received.final_layer[0]).abs().max())
    totals_ok = torch.allclose(received.per_layer.sum(-1), torch.full_like(received.per_layer.sum(-1), heads * n), rtol=1e-4)
    print(f"\nchecks: totals = heads x tokens: {'ok' if totals_ok else 'FAILED'}; "
          f"max |dense route - kernel| on the final layer: {worst:.2e}")
    return 0 if totals_ok and worst < 1e-3 * n else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyattn", description="Attributions vs. attention for long-document classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the compiled core end to end on a seeded tiny Longformer")
    demo_parser.add_argument("--length", type=int, default=4096, help="document length in tokens (default 4096)")
    demo_parser.add_argument("--layers", type=int, default=6, choices=range(1, 7), metavar="1..6", help="layers (default 6)")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.set_defaults(run=demo)
    args = parser.parse_args(argv)
    if args.command == "demo" and not 1 <= args.length <= 8192:
        parser.error(f"--length must be between 1 and 8192 tokens, got {args.length}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
