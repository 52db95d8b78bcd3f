"""Train (or evaluate) the shipped demo model.

    python -m pyattn.demo.train --evaluate      # held-out accuracy of the shipped model
    python -m pyattn.demo.train [--out DIR]     # retrain: tokenizer, model, weights

Training: a byte-level BPE tokenizer (RoBERTa-style, 'Ġ' marks a leading
space) trained on the training split with the `tokenizers` library; a small
Longformer (3 layers, 4 heads, hidden 64, windows 32/64/128: different per
layer) trained from scratch with AdamW on the training split, documents
bucketed by length; weights saved as safetensors.

Two things keep its attributions meaningful. Labels are smoothed (0.95 /
0.05), so the model is not saturated. And it also sees neutral examples with
target (0.5, 0.5): documents of shared words only, and the integrated-
gradients baseline itself ([CLS] [PAD]... [SEP]); without them the baseline
happened to be classified as one topic with p = 0.999, leaving
F(input) - F(baseline) near 0 for that topic's documents, and nothing to
attribute.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time

import torch

from pyattn.demo import MODEL_DIR
from pyattn.demo.data import demo_documents

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MAX_TOKENS = 4096


def train_tokenizer(texts, vocab_size: int = 1200):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=MAX_TOKENS,
    )


def make_config(vocab_size: int):
    from transformers import LongformerConfig

    return LongformerConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        attention_window=[32, 64, 128],
        max_position_embeddings=MAX_TOKENS + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=2,
        id2label={0: "machine learning", 1: "programming languages"},
        label2id={"machine learning": 0, "programming languages": 1},
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


def _batches(encoded, batch_tokens: int, rng: random.Random):
    """Length-bucketed batches of at most ~batch_tokens tokens."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    batches, current = [], []
    for index in order:
        longest = max([len(encoded[i][0]) for i in current + [index]])
        if current and longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


POSITION_OFFSET = 2  # RoBERTa-style positions start at pad_token_id + 1 = 2


def _collate(encoded, indices, pad_id: int):
    length = max(len(encoded[i][0]) for i in indices)
    ids = torch.full((len(indices), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, i in enumerate(indices):
        tokens = encoded[i][0]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1
    targets = torch.tensor([encoded[i][1] for i in indices], dtype=torch.float32)
    # Positions as pyattn.attribute gives them (from the input, so that the
    # [PAD]s of a baseline-like example sit at real positions, not at pad_id).
    positions = (torch.arange(length) + POSITION_OFFSET).expand_as(ids)
    return ids, mask, global_mask, positions, targets


def encode_documents(tokenizer, documents, smoothing: float = 0.0):
    """(ids, target probabilities) per document."""
    out = []
    for d in documents:
        target = [smoothing / 2] * 2
        target[d.label] = 1 - smoothing / 2
        out.append((tokenizer(d.text, truncation=True, max_length=MAX_TOKENS)["input_ids"], target))
    return out


def neutral_examples(tokenizer, count: int, rng: random.Random):
    """Target (0.5, 0.5): shared-words-only documents and baseline-like inputs."""
    from pyattn.demo.data import generate_document

    out = []
    for index in range(count):
        n_words = int(round(150 * (3900 / 150) ** rng.random()))
        if index % 4 == 0:
            ids = [tokenizer.cls_token_id] + [tokenizer.pad_token_id] * n_words + [tokenizer.sep_token_id]
        else:
            ids = tokenizer(generate_document(None, n_words, rng), truncation=True, max_length=MAX_TOKENS)["input_ids"]
        out.append((ids, [0.5, 0.5]))
    return out


@torch.no_grad()
def accuracy(model, tokenizer, documents, batch_tokens: int = 16384) -> float:
    model.eval()
    encoded = encode_documents(tokenizer, documents)
    correct = 0
    for indices in _batches(encoded, batch_tokens, random.Random(0)):
        ids, mask, global_mask, positions, targets = _collate(encoded, indices, tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask, position_ids=positions).logits
        correct += int((logits.argmax(-1) == targets.argmax(-1)).sum())
    return correct / len(documents)


def train(out_dir: str, epochs: int = 3, lr: float = 1e-3, batch_tokens: int = 8192, seed: int = 0) -> dict:
    from transformers import LongformerForSequenceClassification
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    train_docs, validation_docs = demo_documents("train"), demo_documents("validation")
    tokenizer = train_tokenizer([d.text for d in train_docs])
    model = LongformerForSequenceClassification(make_config(len(tokenizer)))
    encoded = encode_documents(tokenizer, train_docs, smoothing=0.1) + neutral_examples(tokenizer, 160, rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * len(_batches(encoded, batch_tokens, random.Random(0)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.time()
    with tqdm(total=steps, desc="training the demo model", unit="batch") as bar:
        for epoch in range(epochs):
            model.train()
            for indices in _batches(encoded, batch_tokens, rng):
                ids, mask, global_mask, positions, targets = _collate(encoded, indices, tokenizer.pad_token_id)
                logits = model(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask, position_ids=positions).logits
                loss = torch.nn.functional.cross_entropy(logits, targets)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                bar.update()
            bar.write(f"epoch {epoch + 1}: validation accuracy {accuracy(model, tokenizer, validation_docs):.3f}")
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {"train_seconds": time.time() - start, "validation_accuracy": accuracy(model, tokenizer, validation_docs)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyattn.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=MODEL_DIR, help="where to write the model and tokenizer (default: inside the package)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--evaluate", action="store_true", help="only measure the shipped (or --out) model's held-out accuracy")
    args = parser.parse_args(argv)
    if not args.evaluate:
        print(train(args.out, epochs=args.epochs))
    from transformers import AutoTokenizer, LongformerForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(args.out, local_files_only=True)
    model = LongformerForSequenceClassification.from_pretrained(args.out, local_files_only=True)
    test = demo_documents("test")
    print(f"held-out accuracy on {len(test)} test documents: {accuracy(model, tokenizer, test):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
