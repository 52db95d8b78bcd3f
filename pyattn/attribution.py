"""Token attributions: Captum's Layer Integrated Gradients on the embedding
layer, with the inputs built as the model builds them (:mod:`pyattn.inputs`),
the real convergence delta, and as many steps as completeness needs.

Integrated gradients is complete: the attributions sum to
``F(input) - F(baseline)`` for the target class's probability. The gap between
the two, ``delta``, measures how well the path integral was approximated; with
``n_steps="auto"`` pyattn doubles the steps until ``|delta|`` is at most
``tol`` times ``|F(input) - F(baseline)|``.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from pyattn.inputs import embedding_layer, encode

__all__ = ["Attribution", "attribute", "attribute_many", "auto_batch_size"]

#: n_steps="auto": the first try and the cap.
AUTO_FIRST_STEPS = 8
AUTO_MAX_STEPS = 512


@dataclass
class Attribution:
    """Attributions of one document.

    ``scores`` (N,) are the per-token attributions (sum over the embedding
    dimension); ``scores_l2_normalised`` the same divided by their L2 norm (the
    captum notebook normalised, the comparison notebook did not: both are
    here, named). Positions include [CLS] and [SEP].
    """

    tokens: list[str]
    input_ids: list[int]
    scores: np.ndarray
    probabilities: np.ndarray  # (C,) softmax of the model on the input
    predicted_label: int
    target: int
    delta: float  # sum(scores) - (F(input) - F(baseline)), target class
    output_gap: float  # F(input) - F(baseline), target class
    n_steps: int  # steps of the final integration
    model_evaluations: int  # forward+backward passes over all tries, plus the 2 forwards
    converged: bool  # |delta| <= tol * |output_gap| (always True for a fixed n_steps)
    truncated_tokens: int
    tries: list[tuple[int, float]] = field(default_factory=list)  # (n_steps, |delta|) per try

    @property
    def scores_l2_normalised(self) -> np.ndarray:
        norm = float(np.linalg.norm(self.scores))
        return self.scores / norm if norm > 0 else self.scores.copy()

    @property
    def relative_error(self) -> float:
        """|delta| / |F(input) - F(baseline)|."""
        return abs(self.delta) / abs(self.output_gap) if self.output_gap else float("inf")

    def to_frame(self):
        """One row per token (pandas DataFrame): position, token, input id,
        score, L2-normalised score."""
        import pandas as pd

        return pd.DataFrame(
            {
                "position": np.arange(len(self.tokens)),
                "token": self.tokens,
                "input_id": self.input_ids,
                "score": self.scores,
                "score_l2_normalised": self.scores_l2_normalised,
            }
        )


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 * 1024**3


def auto_batch_size(model: torch.nn.Module, n_tokens: int, n_steps: int, device=None, fraction: float = 0.5) -> int:
    """How many interpolation steps to run at once: a rough estimate of one
    step's forward + backward activations (per layer: hidden and intermediate
    activations, and the attention probabilities of a Longformer band or a
    full attention matrix), fitted into ``fraction`` of the device's free
    memory. At least 1, at most ``n_steps``."""
    config = model.config
    layers = int(getattr(config, "num_hidden_layers", 12))
    hidden = int(getattr(config, "hidden_size", 768))
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    heads = int(getattr(config, "num_attention_heads", 12))
    window = getattr(config, "attention_window", None)
    if window is None:
        attended = n_tokens  # full attention
    else:
        attended = (max(window) if isinstance(window, (list, tuple)) else int(window)) + 2
    per_token = layers * (14 * hidden + 2 * intermediate + 3 * heads * attended)
    bytes_per_step = max(1, per_token * n_tokens * 4)
    fit = int(_available_bytes(_resolve_device(device)) * fraction // bytes_per_step)
    return max(1, min(n_steps, fit))


class _ProbabilityForward:
    """F(input_ids, ...) -> softmax probabilities, the function Captum integrates."""

    def __init__(self, model: torch.nn.Module, has_global: bool):
        self.model = model
        self.has_global = has_global

    def __call__(self, input_ids, attention_mask, position_ids, global_attention_mask=None):
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        if self.has_global:
            kwargs["global_attention_mask"] = global_attention_mask
        return self.model(**kwargs).logits.softmax(-1)


def _steps_schedule(n_steps, max_steps: int) -> list[int]:
    if n_steps == "auto":
        steps, schedule = AUTO_FIRST_STEPS, []
        while steps < max_steps:
            schedule.append(steps)
            steps *= 2
        return schedule + [max_steps]
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f'n_steps must be "auto" or a positive int, got {n_steps!r}')
    return [n_steps]


def attribute(
    model: torch.nn.Module,
    tokenizer,
    text: str,
    target: int | None = None,
    n_steps: int | str = "auto",
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    max_length: int | None = None,
    device=None,
    tol: float = 0.01,
    max_steps: int = AUTO_MAX_STEPS,
    autocast: bool = False,
) -> Attribution:
    """Layer Integrated Gradients of one document on the model's embeddings.

    Parameters
    ----------
    target:
        Class index to explain; None explains the predicted class.
    n_steps:
        ``"auto"`` (start at 8 and double until ``|delta| <= tol * |F(input) -
        F(baseline)|``, at most ``max_steps``; ``converged`` says whether it
        got there) or a fixed number of steps.
    internal_batch_size:
        Steps per forward pass; None fits them to the device's free memory.
    max_length:
        Longest input in tokens, [CLS] and [SEP] included; None takes the
        model's limit. Longer texts are truncated with a warning.
    device:
        None uses the GPU when there is one.
    autocast:
        Run the model under ``torch.autocast`` (float16 on CUDA, bfloat16 on
        CPU): faster, less exact.

    Returns
    -------
    Attribution
    """
    from captum.attr import LayerIntegratedGradients

    device = _resolve_device(device)
    model = model.to(device).eval()
    document = encode(model, tokenizer, text, max_length).to(device)
    forward = _ProbabilityForward(model, document.global_attention_mask is not None)
    extra = (document.attention_mask, document.position_ids)
    if document.global_attention_mask is not None:
        extra = extra + (document.global_attention_mask,)

    with torch.no_grad():
        probabilities = forward(document.input_ids, *extra)[0].float()
        baseline_probabilities = forward(document.baseline_ids, *extra)[0].float()
    num_classes = probabilities.shape[0]
    predicted = int(probabilities.argmax())
    if target is None:
        target = predicted
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= int(target) < num_classes:
        raise ValueError(f"target must be a class index in 0..{num_classes - 1} (or None for the predicted class), got {target!r}")
    target = int(target)
    gap = float(probabilities[target] - baseline_probabilities[target])

    schedule = _steps_schedule(n_steps, max_steps)
    lig = LayerIntegratedGradients(forward, embedding_layer(model))
    n_tokens = document.input_ids.shape[1]
    evaluations, tries = 2, []
    scores, delta, steps, converged = None, float("nan"), 0, False
    for steps in schedule:
        batch = internal_batch_size or auto_batch_size(model, n_tokens, steps, device)
        context = torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16) if autocast else nullcontext()
        with context:
            attributions = lig.attribute(
                document.input_ids,
                baselines=document.baseline_ids,
                target=target,
                additional_forward_args=extra,
                n_steps=steps,
                method=method,
                internal_batch_size=batch,
            )
        evaluations += steps
        # Longformer pads to a multiple of its window inside: crop to the document.
        per_token = attributions[0, :n_tokens].float().sum(-1)
        scores = per_token.detach().cpu().double().numpy()
        delta = float(scores.sum()) - gap
        tries.append((steps, abs(delta)))
        converged = abs(delta) <= tol * abs(gap)
        if converged:
            break
    if n_steps != "auto":
        converged = True  # a fixed count was asked for; delta says how good it is
    return Attribution(
        tokens=document.tokens,
        input_ids=document.input_ids[0].tolist(),
        scores=scores,
        probabilities=probabilities.cpu().numpy(),
        predicted_label=predicted,
        target=target,
        delta=delta,
        output_gap=gap,
        n_steps=steps,
        model_evaluations=evaluations,
        converged=converged,
        truncated_tokens=document.truncated_tokens,
        tries=tries,
    )


def attribute_many(
    model: torch.nn.Module,
    tokenizer,
    texts: Iterable[str],
    targets: Sequence[int | None] | None = None,
    progress: bool = True,
    **kwargs,
) -> list[Attribution]:
    """:func:`attribute` for many texts, with a progress bar (tqdm). Keyword
    arguments are passed on; ``targets`` gives one target per text."""
    from tqdm.auto import tqdm

    texts = list(texts)
    if targets is not None and len(targets) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(targets)} targets")
    results = []
    for index, text in enumerate(tqdm(texts, desc="attributing", unit="doc", disable=not progress)):
        target = None if targets is None else targets[index]
        results.append(attribute(model, tokenizer, text, target=target, **kwargs))
    return results

