"""Peak memory of attention received from a model on a long document:
streamed (hooks reduce each layer, no band kept) vs collected
(output_attentions, every layer's band held) vs a plain forward without
attentions, the floor.

A randomly initialised Longformer with base's attention shape (12 layers x
12 heads, window 512; hidden size 384 to keep the run short), one document
of N tokens, CPU. Each mode runs in a fresh process: build the model, warm
up on a short input, reset the peak-RSS counter, run; extra = peak - before.

Run: python benchmarks/memory_attention.py [--tokens 4096] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from memory import _size, _status_kib

MODES = ("plain forward", "streamed", "collected")


def child(mode: str, n: int, device: str) -> None:
    import torch
    from transformers import LongformerConfig, LongformerForSequenceClassification

    from pyattn.model_attention import attention_from_inputs

    torch.manual_seed(0)
    config = LongformerConfig(
        vocab_size=1000, hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536,
        attention_window=512, max_position_embeddings=n + 2, pad_token_id=1,
    )
    model = LongformerForSequenceClassification(config).eval().to(device)
    ids = torch.randint(3, 1000, (1, n), device=device)

    def run(input_ids):
        if mode == "plain forward":
            with torch.no_grad():
                return model(input_ids=input_ids).logits
        return attention_from_inputs(model, input_ids, stream=mode == "streamed").received.per_layer

    run(ids[:, :600])  # warm-up: code, thread pools, allocator
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(ids)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = _status_kib("VmRSS")
        run(ids)
        extra = (_status_kib("VmHWM") - before) * 1024
    print(json.dumps({"extra_bytes": extra}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tokens, args.device)
        return
    extras = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--tokens", str(args.tokens), "--device", args.device],
                             capture_output=True, text=True, check=True)
        extras[mode] = json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]
    floor = extras["plain forward"]
    print(f"| mode ({args.tokens} tokens, {args.device}) | peak extra memory | x plain forward |")
    print("|---|---:|---:|")
    for mode in MODES:
        print(f"| {mode} | {_size(extras[mode])} | {extras[mode] / floor:.2f} |")


if __name__ == "__main__":
    main()
