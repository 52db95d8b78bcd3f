"""Baselines for the attribution benchmarks, kept as they were run before
pyattn's nested quadrature:

- :func:`notebook_method`: Captum's LayerIntegratedGradients as the original
  notebooks called it (Gauss-Legendre, 50 steps, internal batch size 2,
  ``return_convergence_delta=True``: Captum's own two forwards for the
  embedding outputs and two for the delta).
- :func:`doubling_loop`: pyattn's previous ``n_steps="auto"``: Gauss-Legendre
  at 8 steps, doubled until ``|delta| <= tol * |gap|``, every try a fresh
  Captum call (nothing reused), plus two forwards for F(input), F(baseline).

Both return ``(scores (N,) numpy, relative_error, model_evaluations,
n_steps)``; evaluations count examples through the full model, as
``Attribution.model_evaluations`` does.
"""

from __future__ import annotations

import torch

from pyattn.models.inputs import embedding_layer, encode


def _forward(model, has_global):
    def forward(input_ids, attention_mask, position_ids, global_attention_mask=None):
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        if has_global:
            kwargs["global_attention_mask"] = global_attention_mask
        return model(**kwargs).logits.softmax(-1)

    return forward


def _setup(model, tokenizer, text):
    document = encode(model, tokenizer, text)
    has_global = document.global_attention_mask is not None
    extra = (document.attention_mask, document.position_ids) + ((document.global_attention_mask,) if has_global else ())
    return document, _forward(model, has_global), extra


def _captum_setup(model, tokenizer, text, target):
    """What both Captum baselines do first: F(input) and F(baseline) (two
    plain forwards), the target, the output gap and Captum's LIG."""
    from captum.attr import LayerIntegratedGradients

    document, forward, extra = _setup(model, tokenizer, text)
    with torch.no_grad():
        probabilities = forward(document.input_ids, *extra)[0]
        baseline = forward(document.baseline_ids, *extra)[0]
    target = int(probabilities.argmax()) if target is None else target
    gap = float(probabilities[target] - baseline[target])
    return document, extra, target, gap, LayerIntegratedGradients(forward, embedding_layer(model))


def notebook_method(model, tokenizer, text, target=None, n_steps=50, internal_batch_size=2):
    document, extra, target, gap, lig = _captum_setup(model, tokenizer, text, target)
    attributions, delta = lig.attribute(
        document.input_ids, baselines=document.baseline_ids, target=target, additional_forward_args=extra,
        n_steps=n_steps, method="gausslegendre", internal_batch_size=internal_batch_size, return_convergence_delta=True,
    )
    n = document.input_ids.shape[1]
    scores = attributions[0, :n].sum(-1).double().numpy()
    # 2 (our F) + 2 (Captum's embedding reads) + n_steps + 2 (Captum's delta)
    return scores, abs(float(delta)) / abs(gap), 2 + 2 + n_steps + 2, n_steps


def doubling_loop(model, tokenizer, text, target=None, tol=0.01, first=8, max_steps=512, batch=None):
    document, extra, target, gap, lig = _captum_setup(model, tokenizer, text, target)
    n = document.input_ids.shape[1]
    evaluations, steps = 2, first
    while True:
        attributions = lig.attribute(
            document.input_ids, baselines=document.baseline_ids, target=target, additional_forward_args=extra,
            n_steps=steps, method="gausslegendre", internal_batch_size=batch or steps,
        )
        evaluations += steps + 2  # Captum's two embedding reads per call
        scores = attributions[0, :n].sum(-1).double().numpy()
        error = abs(float(scores.sum()) - gap) / abs(gap)
        if error <= tol or steps >= max_steps:
            return scores, error, evaluations, steps
        steps = min(2 * steps, max_steps)


def sharpened(model, factor: float):
    """A copy of a sequence classifier whose logits are ``factor`` times
    sharper: the classification head's output weights and bias multiplied by
    ``factor`` (the softmax saturates, the path integrand gets a steep step)."""
    import copy

    sharp = copy.deepcopy(model)
    head = sharp.classifier.out_proj
    with torch.no_grad():
        head.weight.mul_(factor)
        head.bias.mul_(factor)
    return sharp


def base_shaped_longformer(seed: int = 0):
    """A Longformer with longformer-base-4096's exact config (12 layers,
    hidden 768, 12 heads, window 512, 4,098 positions, vocab 50,265), random
    seeded weights, two labels; built locally, no download."""
    from transformers import LongformerConfig, LongformerForSequenceClassification

    torch.manual_seed(seed)
    config = LongformerConfig(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        attention_window=[512] * 12, max_position_embeddings=4098, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        type_vocab_size=1, num_labels=2,
    )
    return LongformerForSequenceClassification(config).eval()


class PeakRSS:
    """Peak resident memory of this process inside a ``with`` block, above
    its level on entry, sampled every ``interval`` seconds (5 ms) from
    /proc/self/statm (bytes): ``start``, ``peak`` and ``extra_bytes``."""

    def __init__(self, interval: float = 0.005):
        import os

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.interval = interval

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        import ctypes
        import threading

        try:  # hand memory freed by earlier work back to the OS, so the baseline is real
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # pragma: no cover - not glibc
            pass
        self.start = self.peak = self._rss()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.extra_bytes = self.peak - self.start


def corpus_ids(tokenizer, n: int) -> list[int]:
    """The first ``n`` token ids (no special tokens) of the demo training
    corpus, documents concatenated: long documents for the base-shaped
    benchmarks, tokenized by the demo tokenizer (ids < 50,265)."""
    from pyattn.demo import demo_documents

    ids: list[int] = []
    for document in demo_documents("train"):
        ids += tokenizer(document.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            break
    return ids[:n]
