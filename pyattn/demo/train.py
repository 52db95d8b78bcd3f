"""Train (or evaluate) the shipped demo model.

    python -m pyattn.demo.train --evaluate      # held-out accuracy of the shipped model
    python -m pyattn.demo.train [--out DIR]     # retrain (seed 0): tokenizer, model, weights

Retraining is seeded (``--seed``, default 0; the data splits are fixed by
:mod:`pyattn.demo.data`) and single-threaded by default (``--threads 1``):
run twice on one machine it wrote bit-identical files, the shipped ones,
in 11-15 minutes each (1 thread on a shared, loaded 2-core machine). Another
torch build or thread count may sum in another order and differ in the last
bits.

Training: a byte-level BPE tokenizer (RoBERTa-style, 'Ġ' marks a leading
space; its post-processor adds ``<s>`` ... ``</s>``) trained on the training
split with the `tokenizers` library; a small Longformer (3 layers, 4 heads,
hidden 64, windows 32/64/128: different per layer) trained from scratch with
AdamW on the training split, documents bucketed by length; weights saved as
safetensors.

The model is trained and evaluated on exactly what pyattn feeds it: every
document goes through :func:`pyattn.models.inputs.encode` (``<s>`` text ``</s>``,
the model's own position ids, global attention on ``<s>``), and accuracy is
measured one document at a time with ``model(**encoded.forward_kwargs())``,
as :func:`pyattn.attribute` runs the model. (The first demo model was trained
on bare token ids, with global attention on the first word: 99.5% held-out
accuracy on those, 96.5% as pyattn fed it.)

Two things keep its attributions meaningful. Labels are smoothed (0.95 /
0.05), so the model is not saturated. And it also sees neutral examples with
target (0.5, 0.5): documents of shared words only, and the integrated-
gradients baseline itself (``<s>`` ``<pad>``... ``</s>`` as pyattn builds it);
without them the baseline happened to be classified as one topic with
p = 0.999, leaving F(input) - F(baseline) near 0 for that topic's documents,
and nothing to attribute.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pyattn.demo import MODEL_DIR
from pyattn.demo.data import LABELS, demo_documents
from pyattn.models.inputs import EncodedDocument, TruncationWarning, encode

__all__ = ["Example", "accuracy", "encode_documents", "main", "predictions", "train"]

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MAX_TOKENS = 4096


def _train_tokenizer(texts, vocab_size: int = 1200):
    """A byte-level BPE tokenizer whose ``tokenizer(text)`` adds ``<s>`` ...
    ``</s>`` (RoBERTa's post-processor), as :func:`pyattn.models.inputs.encode`
    builds inputs."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False)
    # RobertaProcessing = the ByteLevel offsets handling it replaces (same
    # settings) + <s> A </s> (pairs: <s> A </s></s> B </s>).
    backend._tokenizer.post_processor = processors.RobertaProcessing(
        sep=("</s>", backend.token_to_id("</s>")), cls_token=("<s>", backend.token_to_id("<s>")), trim_offsets=False, add_prefix_space=True
    )
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


def _make_config(vocab_size: int):
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


@dataclass
class Example:
    """One training input exactly as pyattn feeds the model (the tensors of
    :func:`pyattn.models.inputs.encode`, as lists of length N) and its target
    probabilities (length C).

    Examples
    --------
    >>> Example([0, 71, 2], [2, 3, 4], [1, 0, 0], [0.95, 0.05]).target
    [0.95, 0.05]
    """

    input_ids: list[int]
    position_ids: list[int]
    global_attention_mask: list[int]
    target: list[float]


def _encode(model, tokenizer, text: str):
    with warnings.catch_warnings():
        # pyattn truncates (with this warning) what does not fit; so does training.
        warnings.simplefilter("ignore", TruncationWarning)
        return encode(model, tokenizer, text)


def _example(document: EncodedDocument, target, input_ids=None) -> Example:
    ids = document.input_ids if input_ids is None else input_ids
    return Example(ids[0].tolist(), document.position_ids[0].tolist(), document.global_attention_mask[0].tolist(), list(target))


def encode_documents(model, tokenizer, documents, smoothing: float = 0.0) -> list[Example]:
    """Each document through :func:`pyattn.models.inputs.encode` (``<s>`` text
    ``</s>``, the model's position ids, global attention on ``<s>``), with
    its (smoothed) one-hot target.

    Parameters
    ----------
    model, tokenizer
    documents : sequence of DemoDocument
        Anything with ``.text`` and ``.label`` (0 or 1).
    smoothing : float
        Label smoothing: the target is ``1 - smoothing / 2`` on the label.

    Returns
    -------
    list of Example

    Examples
    --------
    >>> import pyattn
    >>> from pyattn.demo import DemoDocument
    >>> model, tokenizer = pyattn.load_demo()
    >>> example = encode_documents(model, tokenizer, [DemoDocument("the borrow checker", 1)], smoothing=0.1)[0]
    >>> example.input_ids == encode(model, tokenizer, "the borrow checker").input_ids[0].tolist(), example.global_attention_mask, example.target
    (True, [1, 0, 0, 0, 0], [0.05, 0.95])
    """
    out = []
    for d in documents:
        target = [smoothing / 2] * 2
        target[d.label] = 1 - smoothing / 2
        out.append(_example(_encode(model, tokenizer, d.text), target))
    return out


def _neutral_examples(model, tokenizer, documents, count: int, rng: random.Random) -> list[Example]:
    """Target (0.5, 0.5): shared-words-only documents, and (one in four) the
    integrated-gradients baseline exactly as pyattn builds it for a training
    document (``<s>`` + ``<pad>``... + ``</s>`` with the document's
    position ids and global mask)."""
    from pyattn.demo.data import generate_document

    out = []
    for index in range(count):
        if index % 4 == 0:
            document = _encode(model, tokenizer, rng.choice(documents).text)
            out.append(_example(document, [0.5, 0.5], input_ids=document.baseline_ids))
        else:
            n_words = int(round(150 * (3900 / 150) ** rng.random()))
            out.append(_example(_encode(model, tokenizer, generate_document(None, n_words, rng)), [0.5, 0.5]))
    return out


def _batches(examples: list[Example], batch_tokens: int, rng: random.Random):
    """Length-bucketed batches of at most ~batch_tokens tokens."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    batches, current = [], []
    for index in order:
        longest = max(len(examples[i].input_ids) for i in current + [index])
        if current and longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def _collate(examples: list[Example], indices, pad_id: int):
    """Right-padded batch; the padding is masked out (attention mask 0,
    position id = pad id as RoBERTa numbers pads, no global attention), so
    each row computes what it computes alone."""
    length = max(len(examples[i].input_ids) for i in indices)
    ids = torch.full((len(indices), length), pad_id, dtype=torch.long)
    positions = torch.full_like(ids, pad_id)
    mask = torch.zeros_like(ids)
    global_mask = torch.zeros_like(ids)
    for row, i in enumerate(indices):
        e, n = examples[i], len(examples[i].input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        positions[row, :n] = torch.tensor(e.position_ids)
        global_mask[row, :n] = torch.tensor(e.global_attention_mask)
        mask[row, :n] = 1
    targets = torch.tensor([examples[i].target for i in indices], dtype=torch.float32)
    return dict(input_ids=ids, attention_mask=mask, global_attention_mask=global_mask, position_ids=positions), targets


@torch.no_grad()
def predictions(model, tokenizer, documents) -> tuple[np.ndarray, np.ndarray]:
    """The model's class probabilities on each document and on its
    integrated-gradients baseline, computed as :func:`pyattn.attribute` does:
    one document at a time through :func:`pyattn.models.inputs.encode`, then
    ``model(**encoded.forward_kwargs(ids)).logits.softmax(-1)``.

    Parameters
    ----------
    documents:
        Sequence of D :class:`~pyattn.demo.DemoDocument` (or anything with ``.text``).

    Returns
    -------
    on_text, on_baseline:
        float64 arrays of shape ``(D, C)``.

    Examples
    --------
    >>> import pyattn
    >>> from pyattn.demo import DemoDocument
    >>> model, tokenizer = pyattn.load_demo()
    >>> documents = [DemoDocument("the borrow checker rejects the program", 1), DemoDocument("gradient descent on a neural network", 0)]
    >>> on_text, on_baseline = predictions(model, tokenizer, documents)
    >>> on_text.shape, on_text.argmax(-1).tolist()
    ((2, 2), [1, 0])
    >>> bool((abs(on_baseline - 0.5) < 0.1).all())  # the baseline says nothing: trained toward (0.5, 0.5)
    True
    """
    model.eval()
    on_text, on_baseline = [], []
    for d in documents:
        document = _encode(model, tokenizer, d.text)
        on_text.append(model(**document.forward_kwargs()).logits.softmax(-1)[0].double().numpy())
        on_baseline.append(model(**document.forward_kwargs(document.baseline_ids)).logits.softmax(-1)[0].double().numpy())
    return np.array(on_text), np.array(on_baseline)


def accuracy(model, tokenizer, documents) -> float:
    """Share of ``documents`` (with ``.text`` and ``.label``) whose predicted
    class, as :func:`predictions` computes it (as pyattn feeds the model),
    is their label.

    Measured on the 200 held-out documents
    (``python -m pyattn.demo.train --evaluate``): 0.995.

    Examples
    --------
    >>> import pyattn
    >>> from pyattn.demo import DemoDocument
    >>> model, tokenizer = pyattn.load_demo()
    >>> accuracy(model, tokenizer, [DemoDocument("the borrow checker rejects the program", 1),
    ...                             DemoDocument("gradient descent on a neural network", 1)])  # the second label is wrong
    0.5
    """
    probabilities, _ = predictions(model, tokenizer, documents)
    return float(np.mean(probabilities.argmax(-1) == np.array([d.label for d in documents])))


def train(out_dir: str, epochs: int = 3, lr: float = 1e-3, batch_tokens: int = 8192, seed: int = 0) -> dict:
    """Train the demo model from scratch (seeded) and save it with its
    tokenizer: a byte-level BPE tokenizer on the training split, then the
    small Longformer with AdamW, as the module docstring describes.

    Parameters
    ----------
    out_dir : str
        Where the model and tokenizer are written.
    epochs : int
    lr : float
        Peak learning rate (warm-up, then cosine decay).
    batch_tokens : int
        Tokens per batch (documents bucketed by length).
    seed : int

    Returns
    -------
    dict
        ``train_seconds`` and ``validation_accuracy``.

    Examples
    --------
    >>> train("demo-model")  # 11-15 minutes on one thread  # doctest: +SKIP
    {'train_seconds': ..., 'validation_accuracy': 1.0}
    """
    from transformers import LongformerForSequenceClassification
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    train_docs, validation_docs = demo_documents("train"), demo_documents("validation")
    tokenizer = _train_tokenizer([d.text for d in train_docs])
    model = LongformerForSequenceClassification(_make_config(len(tokenizer)))
    examples = encode_documents(model, tokenizer, train_docs, smoothing=0.1) + _neutral_examples(model, tokenizer, train_docs, 160, rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * len(_batches(examples, batch_tokens, random.Random(0)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.time()
    with tqdm(total=steps, desc="training the demo model", unit="batch") as bar:
        for epoch in range(epochs):
            model.train()
            for indices in _batches(examples, batch_tokens, rng):
                inputs, targets = _collate(examples, indices, tokenizer.pad_token_id)
                loss = torch.nn.functional.cross_entropy(model(**inputs).logits, targets)
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
    tokenizer.backend_tokenizer.no_truncation()  # truncation is encode's job (with a warning)
    tokenizer.save_pretrained(out_dir)
    return {"train_seconds": round(time.time() - start, 1), "validation_accuracy": accuracy(model, tokenizer, validation_docs)}


def main(argv=None) -> int:
    """The ``python -m pyattn.demo.train`` command: retrain (unless
    ``--evaluate``), then print the held-out accuracy and the baseline's
    probabilities.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0).

    Examples
    --------
    >>> main(["--evaluate"])  # 200 held-out documents: minutes  # doctest: +SKIP
    held-out accuracy (through pyattn.models.inputs.encode) on 200 test documents: 0.995
    ...
    0
    """
    parser = argparse.ArgumentParser(prog="python -m pyattn.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=MODEL_DIR, help="where to write the model and tokenizer (default: inside the package)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the neutral examples and the batch order")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: bit-reproducible on one torch build, and fastest on a loaded machine)")
    parser.add_argument("--evaluate", action="store_true", help="only measure the shipped (or --out) model's held-out accuracy")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.evaluate:
        print(train(args.out, epochs=args.epochs, seed=args.seed))
    from transformers import AutoTokenizer, LongformerForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(args.out, local_files_only=True)
    model = LongformerForSequenceClassification.from_pretrained(args.out, local_files_only=True)
    test = demo_documents("test")
    on_text, on_baseline = predictions(model, tokenizer, test)
    correct = int((on_text.argmax(-1) == np.array([d.label for d in test])).sum())
    print(f"held-out accuracy (through pyattn.models.inputs.encode) on {len(test)} test documents: {correct / len(test):.3f}")
    print(f"integrated-gradients baseline, p({LABELS[0]}): min {on_baseline[:, 0].min():.3f}, "
          f"mean {on_baseline[:, 0].mean():.3f}, max {on_baseline[:, 0].max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
