"""Token attributions: Layer Integrated Gradients on the embedding layer, with
the inputs built as the model builds them (:mod:`pyattn.inputs`), nested
quadrature that reuses every evaluation, and convergence that means
convergence.

Integrated gradients is complete: the attributions sum to
``F(input) - F(baseline)`` for the target class's probability. The gap between
the two, ``delta``, measures how well the path integral was approximated.
``converged`` is True exactly when ``|delta| <= tol * |F(input) - F(baseline)|``,
for a fixed number of steps as for ``n_steps="auto"``.

How it is computed (equal to Captum's ``LayerIntegratedGradients`` at the same
nodes and weights; the tests check it):

- the embedding layer's output for the input and the baseline is read by
  running the model only up to that layer (one batch of two, embeddings only);
- each node ``alpha`` of the rule runs the model forward and backward once,
  with the embedding layer's output replaced by
  ``(1 - alpha) * E(baseline) + alpha * E(input)``; the gradient is reduced
  at once to one number per token, ``sum_e (E(input) - E(baseline)) * grad``,
  so that any rule's attribution is a weighted sum of stored vectors;
- with a nested rule (trapezoid doubling by default, or Clenshaw-Curtis)
  each refinement adds only
  the new nodes, ``F(input)`` and ``F(baseline)`` come from the end nodes, and
  the change between the last two levels is a per-token error estimate.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from pyattn import quadrature
from pyattn.inputs import embedding_layer, encode

__all__ = ["Attribution", "attribute", "attribute_many", "auto_batch_size"]

#: n_steps="auto": the first level checked (nodes) and the cap.
AUTO_FIRST_STEPS = 9
AUTO_MAX_STEPS = 513
#: the default rule, chosen by measured completeness error per evaluation
#: (benchmarks/results/attribution.md): at tol 0.01 trapezoid doubling reached
#: 1% with 9 nodes on the smooth demo model (as Clenshaw-Curtis did) and with
#: 33 on the sharpened one, where Clenshaw-Curtis and Gauss-Legendre needed 65.
#: For tolerances below ~1e-4 on smooth models Clenshaw-Curtis needs fewer.
DEFAULT_METHOD = "trapezoid"


@dataclass
class Attribution:
    """Attributions of one document.

    ``scores`` (N,) are the per-token attributions (sum over the embedding
    dimension); ``scores_l2_normalised`` the same divided by their L2 norm (the
    captum notebook normalised, the comparison notebook did not: both are
    here, named). Positions include [CLS] and [SEP].

    ``converged`` is True exactly when the completeness error ``|delta|`` is at
    most ``tol * |output_gap|`` (``relative_error <= tol``), whether the steps
    were fixed or automatic. It says nothing about single tokens: read
    ``token_change`` (relative L2 change of ``scores`` between the last two
    levels of a nested rule) and ``token_change_max`` (largest absolute change
    over the largest absolute score) for that; ``score_error`` (N,) is the
    per-token change itself, an error estimate of each score. They are NaN /
    None when no earlier level exists (a first level, or a non-nested rule).

    Attributes
    ----------
    tokens : list of str, length N
    input_ids : list of int, length N
    scores : numpy.ndarray, shape (N,), float64
    probabilities : numpy.ndarray, shape (C,)
    predicted_label, target : int
    delta : float
        ``sum(scores) - output_gap``, the completeness error.
    output_gap : float
        ``p(target | input) - p(target | baseline)``.
    n_steps, model_evaluations : int
    converged : bool
    truncated_tokens : int

    Examples
    --------
    >>> import numpy as np, pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = pyattn.attribute(model, tokenizer, "a compiler for a typed language", n_steps=17)
    >>> len(result.tokens) == len(result.scores), result.target == result.predicted_label
    (True, True)
    >>> bool(np.isclose(result.scores.sum() - result.output_gap, result.delta))
    True
    >>> bool(np.isclose(np.linalg.norm(result.scores_l2_normalised), 1.0))
    True
    """

    tokens: list[str]
    input_ids: list[int]
    scores: np.ndarray
    probabilities: np.ndarray  # (C,) softmax of the model on the input
    predicted_label: int
    target: int
    delta: float  # sum(scores) - (F(input) - F(baseline)), target class
    output_gap: float  # F(input) - F(baseline), target class
    n_steps: int  # nodes (evaluations) of the final quadrature rule
    model_evaluations: int  # examples run through the full model (forward+backward at nodes, plus plain forwards)
    converged: bool  # relative_error <= tol
    truncated_tokens: int
    tries: list[tuple[int, float]] = field(default_factory=list)  # (n_steps, |delta|) per level checked
    tol: float = 0.01
    method: str = DEFAULT_METHOD
    token_change: float = float("nan")  # ||s_n - s_prev||_2 / ||s_n||_2, last two levels
    token_change_max: float = float("nan")  # max|s_n - s_prev| / max|s_n|
    previous_n_steps: int | None = None  # nodes of the level token_change compares with
    score_error: np.ndarray | None = None  # (N,) |s_n - s_prev|
    autocast_dtype: str | None = None  # "bfloat16"/"float16" when run under autocast
    float32_output_gap: float | None = None  # under autocast: F(input) - F(baseline) in float32
    seconds: float = float("nan")

    @property
    def scores_l2_normalised(self) -> np.ndarray:
        """``scores`` divided by their L2 norm, ``(N,)`` (unchanged when all zero)."""
        norm = float(np.linalg.norm(self.scores))
        return self.scores / norm if norm > 0 else self.scores.copy()

    @property
    def relative_error(self) -> float:
        """Completeness error: |delta| / |F(input) - F(baseline)| (inf when
        the gap is 0)."""
        return abs(self.delta) / abs(self.output_gap) if self.output_gap else float("inf")

    @property
    def float32_relative_error(self) -> float | None:
        """Under autocast: |sum(scores) - gap_float32| / |gap_float32|, the
        completeness error against the float32 model's own outputs."""
        if self.float32_output_gap is None:
            return None
        gap = self.float32_output_gap
        return abs(float(self.scores.sum()) - gap) / abs(gap) if gap else float("inf")

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


# --------------------------------------------------------------------------- checks


def _resolve_device(device) -> torch.device:
    """A torch.device that exists on this machine, or a ValueError naming it."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        resolved = device
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} does not exist: this machine has no CUDA GPU (use 'cpu')")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif resolved.type != "cpu":
        available = {"mps": getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()}
        if not available.get(resolved.type):
            raise ValueError(f"device {device!r} does not exist on this machine (use 'cpu'{' or a cuda device' if torch.cuda.is_available() else ''})")
    return resolved


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_arguments(model, n_steps, method, tol, max_steps, max_length, target, internal_batch_size, device) -> torch.device:
    """Range checks for :func:`attribute`, before any work: one ValueError
    naming the argument, its value and what is allowed."""
    if n_steps != "auto" and not (_is_int(n_steps) and n_steps >= 1):
        raise ValueError(f'n_steps must be "auto" or a positive int, got {n_steps!r}')
    if method not in quadrature.METHODS:
        raise ValueError(f"method must be one of {', '.join(quadrature.METHODS)}; got {method!r}")
    if n_steps == "auto" and method not in quadrature.NESTED_METHODS:
        raise ValueError(
            f'n_steps="auto" refines a nested rule ({", ".join(quadrature.NESTED_METHODS)}); method {method!r} is not nested: '
            "give a fixed n_steps or a nested method"
        )
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0 (a relative completeness error, e.g. 0.01), got {tol!r}")
    if not (_is_int(max_steps) and max_steps >= 2):
        raise ValueError(f"max_steps must be an int >= 2, got {max_steps!r}")
    if max_length is not None and not (_is_int(max_length) and max_length >= 3):
        raise ValueError(f"max_length must be None or an int >= 3 ([CLS] + one token + [SEP]), got {max_length!r}")
    if internal_batch_size is not None and not (_is_int(internal_batch_size) and internal_batch_size >= 1):
        raise ValueError(f"internal_batch_size must be None (fit to memory) or a positive int, got {internal_batch_size!r}")
    num_classes = getattr(getattr(model, "config", None), "num_labels", None)
    if target is not None:
        if not _is_int(target) or int(target) < 0 or (num_classes is not None and int(target) >= num_classes):
            allowed = f"a class index in 0..{num_classes - 1}" if num_classes else "a class index >= 0"
            raise ValueError(f"target must be {allowed} (or None for the predicted class), got {target!r}")
    return _resolve_device(device)


# --------------------------------------------------------------------------- memory


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
    memory. At least 1, at most ``n_steps``.

    >>> import pyattn
    >>> model, _ = pyattn.load_demo()
    >>> 1 <= auto_batch_size(model, n_tokens=512, n_steps=16) <= 16
    True
    """
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


# --------------------------------------------------------------------------- the path integral


class _Stop(Exception):
    """Raised by the capture hook: the model need not run past the embeddings."""


class _PathIntegrand:
    """Evaluates the integrand of Layer Integrated Gradients at nodes alpha:
    for each alpha, the target probability and the per-token projection
    ``sum_e (E_in - E_base)[t, e] * dF/dE[t, e]`` (float64, (N_layer,))."""

    def __init__(self, model, document, target: int | None, autocast_dtype, device):
        self.model = model
        self.layer = embedding_layer(model)
        self.document = document
        self.target = target
        self.autocast_dtype = autocast_dtype
        self.device = device
        self.forward_examples = 0
        self.endpoints: dict[float, np.ndarray] = {}  # alpha -> (C,) probabilities
        self.embedded_input, self.embedded_baseline = self._embed()
        self.difference = self.embedded_input - self.embedded_baseline

    def _model_kwargs(self, batch: int, input_ids: torch.Tensor | None = None) -> dict:
        kwargs = self.document.forward_kwargs(input_ids)
        return {k: v.expand(batch, -1) if v.shape[0] == 1 else v for k, v in kwargs.items()}

    def _embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding layer's output for the input and the baseline, as the
        model makes it (padding and position ids included), running the model
        only up to that layer."""
        captured = []

        def hook(module, args, output):
            captured.append(output)
            raise _Stop

        handle = self.layer.register_forward_hook(hook)
        ids = torch.cat([self.document.input_ids, self.document.baseline_ids])
        try:
            with torch.no_grad():
                self.model(**self._model_kwargs(2, ids))
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured or not isinstance(captured[0], torch.Tensor):
            raise ValueError(f"the embedding layer of {type(self.model).__name__} did not return one tensor")
        output = captured[0].detach().float()
        return output[:1], output[1:]

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def __call__(self, alphas: Sequence[float]) -> np.ndarray:
        """Projected gradients (len(alphas), N_layer) float64. With no target
        yet, the batch must start at alpha = 1: the target becomes the class
        the model predicts there (the model's own input)."""
        alpha = torch.tensor(list(alphas), dtype=self.embedded_input.dtype, device=self.device)[:, None, None]
        points = ((1 - alpha) * self.embedded_baseline + alpha * self.embedded_input).requires_grad_(True)

        def replace(module, args, output):
            return points.to(output.dtype) if isinstance(output, torch.Tensor) else output

        handle = self.layer.register_forward_hook(replace)
        try:
            with torch.enable_grad(), self._autocast():
                logits = self.model(**self._model_kwargs(len(alphas))).logits
            probabilities = logits.float().softmax(-1)
            for row, a in enumerate(alphas):
                if a in (0.0, 1.0):
                    self.endpoints[float(a)] = probabilities[row].detach().cpu().numpy()
            if self.target is None:
                if alphas[0] != 1.0:
                    raise RuntimeError("internal error: the first node evaluated must be alpha = 1 when the target is not given")
                self.target = int(probabilities[0].argmax())
            (gradient,) = torch.autograd.grad(probabilities[:, self.target].sum(), points)
        finally:
            handle.remove()
        self.forward_examples += len(alphas)
        projected = (gradient.float() * self.difference).sum(-1)
        return projected.detach().double().cpu().numpy()

    def plain_forward(self, autocast: bool = True) -> np.ndarray:
        """Softmax of the model on (input, baseline), (2, C), one no-grad forward."""
        ids = torch.cat([self.document.input_ids, self.document.baseline_ids])
        with torch.no_grad(), (self._autocast() if autocast else nullcontext()):
            logits = self.model(**self._model_kwargs(2, ids)).logits
        self.forward_examples += 2
        return logits.float().softmax(-1).cpu().numpy()

    def run_endpoints(self) -> None:
        """F(input) and F(baseline) by a plain forward (for rules without the ends)."""
        both = self.plain_forward()
        self.endpoints[1.0], self.endpoints[0.0] = both[0], both[1]
        if self.target is None:
            self.target = int(both[0].argmax())

    def gap(self) -> float:
        """F(input) - F(baseline) for the target class."""
        return float(self.endpoints[1.0][self.target]) - float(self.endpoints[0.0][self.target])


def _evaluate(integrand, alphas, batch: int, on_progress, done: int, total: int):
    """Run the integrand over `alphas` in batches; returns the stacked
    projected gradients and the count of nodes done."""
    projected = [np.zeros((0, integrand.difference.shape[1]))]
    for start in range(0, len(alphas), batch):
        chunk = [float(a) for a in alphas[start : start + batch]]
        projected.append(integrand(chunk))
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, total)
    return np.concatenate(projected), done


def _autocast_dtype(autocast, device: torch.device):
    if autocast is False or autocast is None:
        return None
    if autocast is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if autocast in names:
        return names[autocast]
    if autocast in (torch.bfloat16, torch.float16):
        return autocast
    raise ValueError(f'autocast must be False, True, "bfloat16" or "float16", got {autocast!r}')


def attribute(
    model: torch.nn.Module,
    tokenizer,
    text: str,
    target: int | None = None,
    n_steps: int | str = "auto",
    method: str = DEFAULT_METHOD,
    internal_batch_size: int | None = None,
    max_length: int | None = None,
    device=None,
    tol: float = 0.01,
    max_steps: int = AUTO_MAX_STEPS,
    autocast: bool | str = False,
    fast_attention: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Attribution:
    """Layer Integrated Gradients of one document on the model's embeddings.

    Parameters
    ----------
    model, tokenizer:
        A Hugging Face sequence classifier and its tokenizer.
    text:
        The document.
    target:
        Class index to explain; None explains the predicted class.
    n_steps:
        ``"auto"``: refine a nested rule level by level (9, 17, 33, ...
        nodes, each level reusing every earlier node) until
        ``|delta| <= tol * |F(input) - F(baseline)|``, at most ``max_steps``
        nodes. An int: exactly that many nodes (Captum's ``n_steps``).
        Either way ``converged`` says whether ``|delta| <= tol * |gap|``.
    method:
        Quadrature rule: ``"trapezoid"`` (default, nested: equally spaced
        nodes, halved per level), ``"clenshaw-curtis"`` (nested; fewer nodes
        for tight tolerances on smooth models), or Captum's ``"gausslegendre"`` /
        ``"riemann_*"`` (fixed ``n_steps`` only; two extra forwards for
        ``F(input)`` and ``F(baseline)``).
    internal_batch_size:
        Nodes per forward pass; None fits them to the device's free memory.
    max_length:
        Longest input in tokens, [CLS] and [SEP] included; None takes the
        model's limit. Longer texts are truncated with a warning.
    device:
        None uses the GPU when there is one.
    tol:
        Completeness tolerance (relative to ``|F(input) - F(baseline)|``).
    max_steps:
        Cap on the nodes of ``n_steps="auto"`` (rounded down to 2**k + 1).
    autocast:
        Run the model under ``torch.autocast``: True (float16 on CUDA,
        bfloat16 on CPU), ``"bfloat16"`` or ``"float16"``. Faster, less exact:
        ``relative_error`` is measured against the autocast model's gap and
        ``float32_relative_error`` against the float32 model's.
    fast_attention:
        Longformer only: run self-attention as blocked banded
        ``scaled_dot_product_attention``
        (:func:`pyattn.fast_attention.fast_longformer_attention`), equal to
        transformers' to 1e-5 in float32 (outputs and gradients; tested) and
        several times faster on a CPU. None (default): on for Longformer
        models in float32, off under ``autocast`` (not proven equal there).
    on_progress:
        Called as ``on_progress(nodes_done, nodes_planned)`` after each batch
        of nodes (``nodes_planned`` grows when a level is added).

    Returns
    -------
    Attribution
        ``scores`` (N,) float64 for the N tokens of the encoded text.

    Examples
    --------
    >>> import torch, pyattn
    >>> from pyattn.inputs import encode
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = pyattn.attribute(model, tokenizer, "a compiler for a typed language")
    >>> result.tokens, result.scores.shape
    (['<s>', 'a', 'Ġcompiler', 'Ġfor', 'Ġa', 'Ġtyped', 'Ġlanguage', '</s>'], (8,))
    >>> result.converged, result.relative_error <= result.tol
    (True, True)

    Completeness, from first principles: the scores sum to the change of
    the target's probability from the baseline to the input, up to
    ``delta``.

    >>> document = encode(model, tokenizer, "a compiler for a typed language")
    >>> with torch.no_grad():
    ...     p_input = model(**document.forward_kwargs()).logits.softmax(-1)[0, result.target]
    ...     p_baseline = model(**document.forward_kwargs(document.baseline_ids)).logits.softmax(-1)[0, result.target]
    >>> bool(abs(result.scores.sum() - float(p_input - p_baseline) - result.delta) < 1e-6)
    True
    """
    import time

    start_time = time.perf_counter()
    device = _check_arguments(model, n_steps, method, tol, max_steps, max_length, target, internal_batch_size, device)
    autocast_dtype = _autocast_dtype(autocast, device)
    model = model.to(device).eval()
    document = encode(model, tokenizer, text, max_length).to(device)
    n_tokens = document.input_ids.shape[1]

    from pyattn.fast_attention import fast_attention_context

    if fast_attention is None and autocast_dtype is not None:
        fast_attention = False
    with fast_attention_context(model, fast_attention):
        integrand = _PathIntegrand(model, document, target, autocast_dtype, device)
        level = quadrature.level_of(n_steps) if n_steps != "auto" else None
        nested = method in quadrature.NESTED_METHODS and (n_steps == "auto" or level is not None)
        previous_scores, previous_steps, tries, converged = None, None, [], False
        if nested:
            if n_steps == "auto":
                last_level = int(math.log2(max_steps - 1))
                check_from = min(quadrature.level_of(AUTO_FIRST_STEPS), last_level)
            else:
                last_level = check_from = level
            projected = np.zeros((0, integrand.difference.shape[1]))
            done = 0
            # levels below the first checked one cost nothing extra (their nodes
            # are a subset): the first batch runs all of the first checked level
            for level in range(check_from, last_level + 1):
                alphas, weights, index = quadrature.nested_level(method, level)
                new_alphas = alphas[np.argsort(index)][len(projected) :]
                batch = internal_batch_size or auto_batch_size(model, n_tokens, len(new_alphas), device)
                p, done = _evaluate(integrand, new_alphas, batch, on_progress, done, len(alphas))
                projected = np.concatenate([projected, p])
                scores, steps = weights @ projected[index], len(alphas)
                if level > 0:
                    _, coarse_weights, coarse_index = quadrature.nested_level(method, level - 1)
                    previous_scores, previous_steps = coarse_weights @ projected[coarse_index], len(coarse_index)
                gap = integrand.gap()
                delta = float(scores[:n_tokens].sum()) - gap
                tries.append((steps, abs(delta)))
                converged = abs(delta) <= tol * abs(gap)
                if converged and n_steps == "auto":
                    break
        else:
            integrand.run_endpoints()
            alphas, weights = quadrature.rule(method, n_steps)
            batch = internal_batch_size or auto_batch_size(model, n_tokens, len(alphas), device)
            p, _ = _evaluate(integrand, alphas, batch, on_progress, 0, len(alphas))
            scores, steps = weights @ p, len(alphas)
            gap = integrand.gap()
            delta = float(scores[:n_tokens].sum()) - gap
            tries.append((steps, abs(delta)))
            converged = abs(delta) <= tol * abs(gap)
        target = integrand.target
        probabilities = integrand.endpoints[1.0]
        float32_gap = None
        if autocast_dtype is not None:
            exact = integrand.plain_forward(autocast=False)
            float32_gap = float(exact[0, target] - exact[1, target])

    # Longformer pads to a multiple of its window inside: crop to the document.
    final = scores[:n_tokens]
    token_change = token_change_max = float("nan")
    score_error = None
    if previous_scores is not None:
        difference = final - previous_scores[:n_tokens]
        score_error = np.abs(difference)
        norm = float(np.linalg.norm(final))
        token_change = float(np.linalg.norm(difference)) / norm if norm > 0 else float("inf")
        peak = float(np.abs(final).max())
        token_change_max = float(score_error.max()) / peak if peak > 0 else float("inf")
    return Attribution(
        tokens=document.tokens,
        input_ids=document.input_ids[0].tolist(),
        scores=final.astype(np.float64),
        probabilities=np.asarray(probabilities, dtype=np.float32),
        predicted_label=int(np.argmax(probabilities)),
        target=target,
        delta=delta,
        output_gap=gap,
        n_steps=steps,
        model_evaluations=integrand.forward_examples,
        converged=bool(converged),
        truncated_tokens=document.truncated_tokens,
        tries=tries,
        tol=float(tol),
        method=method,
        token_change=token_change,
        token_change_max=token_change_max,
        previous_n_steps=previous_steps,
        score_error=score_error,
        autocast_dtype=None if autocast_dtype is None else str(autocast_dtype).replace("torch.", ""),
        float32_output_gap=float32_gap,
        seconds=time.perf_counter() - start_time,
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
    arguments are passed on (and checked once, before the first text);
    ``targets`` gives one target per text.

    Returns
    -------
    list of Attribution, one per text, in order.

    Examples
    --------
    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> results = pyattn.attribute_many(model, tokenizer, ["a compiler for a typed language", "gradient descent"], n_steps=9, progress=False)
    >>> [(r.n_steps, r.predicted_label, len(r.scores)) for r in results]
    [(9, 1, 8), (9, 0, 7)]
    """
    from tqdm.auto import tqdm

    texts = list(texts)
    single_target = "target" in kwargs
    if single_target:  # one target for every text
        if targets is not None:
            raise ValueError("give either target (one class for every text) or targets (one per text), not both")
        targets = [kwargs.pop("target")] * len(texts)
    if targets is not None and len(targets) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(targets)} targets")
    checked = {name: kwargs.get(name, default) for name, default in (
        ("n_steps", "auto"), ("method", DEFAULT_METHOD), ("tol", 0.01), ("max_steps", AUTO_MAX_STEPS),
        ("max_length", None), ("internal_batch_size", None), ("device", None))}
    for index, target in enumerate(targets or []):
        try:
            _check_arguments(model, target=target, **checked)
        except ValueError as error:
            raise ValueError(f"targets[{index}]: {error}" if not single_target else str(error)) from None
    _check_arguments(model, target=None, **checked)
    results = []
    for index, text in enumerate(tqdm(texts, desc="attributing", unit="doc", disable=not progress)):
        target = None if targets is None else targets[index]
        results.append(attribute(model, tokenizer, text, target=target, **kwargs))
    return results
