"""Token attributions: Layer Integrated Gradients on the embedding layer, with
the inputs built as the model builds them (:mod:`pyattn.models.inputs`), nested
quadrature that reuses every evaluation, and convergence that means
convergence.

Integrated gradients is complete: the attributions sum to
``F(input) - F(baseline)``, F the model's own output for the target: the
class's softmax probability for a single-label classifier, the label's
sigmoid for a multi-label one (``problem_type="multi_label_classification"``),
the raw output for a regression head (``Attribution.output`` names which). The gap between
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
- with a nested rule (Clenshaw-Curtis by default, or trapezoid doubling)
  each refinement adds only
  the new nodes, ``F(input)`` and ``F(baseline)`` come from the end nodes, and
  the change between the last two levels is a per-token error estimate.
"""

from __future__ import annotations

import contextlib
from pyattn.errors import InputError
from pyattn._quiet import transformers_quiet

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from pyattn import quadrature
from pyattn.models._state import preserving
from pyattn.models.inputs import default_max_length, embedding_layer, encode, model_output, output_kind

__all__ = [
    "Attribution",
    "MemoryBudgetWarning",
    "attribute",
    "attribute_many",
    "attribute_stream",
    "auto_batch_size",
    "batch_for_budget",
    "default_memory_budget",
    "held_bytes",
    "parse_memory_budget",
    "predicted_step_bytes",
]

#: n_steps="auto": the first level checked (nodes) and the cap. Coarser
#: levels (2 and 3 nodes) are evaluated on the way but never trusted.
AUTO_FIRST_STEPS = 5
AUTO_MAX_STEPS = 513
MAX_STEPS = 4096
"""The most integration nodes ``n_steps`` and ``max_steps`` may ask for (as
the CLI's ``--steps``): far beyond what the completeness error needs (the
base-shaped benchmarks converge to 1% by 129), and refused above this at once
rather than run for days."""
#: the default rule, chosen by measured completeness error per evaluation
#: (benchmarks/results/attribution.md, its last table): on the base-shaped
#: Longformer Clenshaw-Curtis reaches 1e-4 at 5 nodes where trapezoid
#: doubling needs 17 or more for 1%; on the demo model, smooth or with logits
#: sharpened 300x, it needs no more nodes than trapezoid doubling for 1%.
#: (An earlier demo model, sharpened 30x, needed 65 where trapezoid needed
#: 33: a steep step mid-path, where Clenshaw-Curtis nodes are sparser;
#: ``method="trapezoid"`` remains for such paths.)
DEFAULT_METHOD = "clenshaw-curtis"


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
    outputs : numpy.ndarray, shape (C,)
        F of every class on the input: what ``output`` names.
    predicted_label, target : int
    delta : float
        ``sum(scores) - output_gap``, the completeness error.
    output_gap : float
        ``F(input) - F(baseline)`` for the target.
    output : str
        What F is: ``"softmax"`` (class probabilities), ``"sigmoid"`` (one
        probability per label, multi-label heads) or ``"raw"`` (the
        regression head's output, not a probability); see
        :func:`pyattn.models.inputs.output_kind`. ``probabilities`` is ``outputs``
        for the first two and refused for ``"raw"``.
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
    outputs: np.ndarray  # (C,) F of the model on the input (softmax, sigmoid or raw: see output)
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
    output: str = "softmax"  # what F is: "softmax", "sigmoid" (multi-label) or "raw" (regression)
    stalled: bool = False  # under autocast: refinement stopped at the rounding floor before tol (STALL_FACTOR)

    @property
    def probabilities(self) -> np.ndarray:
        """``outputs`` when they are probabilities (``output`` softmax or
        sigmoid); a regression head's raw outputs are refused (ValueError)."""
        if self.output == "raw":
            raise ValueError("this model has a regression head: its outputs are raw values, not probabilities (read .outputs)")
        return self.outputs

    @property
    def scores_l2_normalised(self) -> np.ndarray:
        """``scores`` divided by their L2 norm, ``(N,)`` (unchanged when all zero)."""
        norm = float(np.linalg.norm(self.scores))
        return self.scores / norm if norm > 0 else self.scores.copy()

    @property
    def relative_error(self) -> float:
        """Completeness error: |delta| / |F(input) - F(baseline)| (inf when
        the gap is 0, and then ``converged`` is False)."""
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
            raise InputError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} does not exist: this machine has no CUDA GPU (use 'cpu')")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif resolved.type != "cpu":
        available = {"mps": getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()}
        if not available.get(resolved.type):
            raise InputError(f"device {device!r} does not exist on this machine (use 'cpu'{' or a cuda device' if torch.cuda.is_available() else ''})")
    return resolved


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_arguments(model, n_steps, method, tol, max_steps, max_length, target, internal_batch_size, device) -> torch.device:
    """Range checks for :func:`attribute`, before any work: one ValueError
    naming the argument, its value and what is allowed."""
    if n_steps != "auto" and not (_is_int(n_steps) and 1 <= n_steps <= MAX_STEPS):
        raise InputError(f'n_steps must be "auto" or an int 1..{MAX_STEPS}, got {n_steps!r}')
    if method not in quadrature.METHODS:
        raise InputError(f"method must be one of {', '.join(quadrature.METHODS)}; got {method!r}")
    if n_steps == "auto" and method not in quadrature.NESTED_METHODS:
        raise InputError(
            f'n_steps="auto" refines a nested rule ({", ".join(quadrature.NESTED_METHODS)}); method {method!r} is not nested: '
            "give a fixed n_steps or a nested method"
        )
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not math.isfinite(tol) or tol <= 0:
        raise InputError(f"tol must be a finite number > 0 (a relative completeness error, e.g. 0.01), got {tol!r}")
    if not (_is_int(max_steps) and 2 <= max_steps <= MAX_STEPS):
        raise InputError(f"max_steps must be an int 2..{MAX_STEPS}, got {max_steps!r}")
    if max_length is not None and not (_is_int(max_length) and max_length >= 3):
        raise InputError(f"max_length must be None or an int >= 3 ([CLS] + one token + [SEP]), got {max_length!r}")
    if max_length is not None and hasattr(getattr(model, "config", None), "max_position_embeddings") and max_length > default_max_length(model):
        positions = default_max_length(model)
        raise InputError(f"max_length {max_length} is over the model's limit of {positions} tokens (its position embeddings); "
                         f"use max_length <= {positions} or None")
    if internal_batch_size is not None and not (_is_int(internal_batch_size) and internal_batch_size >= 1):
        raise InputError(f"internal_batch_size must be None (fit to memory) or a positive int, got {internal_batch_size!r}")
    if getattr(model, "config", None) is not None:
        output_kind(model)  # a head pyattn cannot explain: one line, before any work
    num_classes = getattr(getattr(model, "config", None), "num_labels", None)
    if target is not None:
        if not _is_int(target) or int(target) < 0 or (num_classes is not None and int(target) >= num_classes):
            allowed = f"a class index in 0..{num_classes - 1}" if num_classes else "a class index >= 0"
            raise InputError(f"target must be {allowed} (or None for the predicted class), got {target!r}")
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


#: The per-step memory model: bytes of a step are ``batch *
#: sum(MEMORY_COEFFICIENTS[k] * feature_k)`` over the features of
#: :func:`memory_features`, plus ``MEMORY_COEFFICIENTS["step"]``. Fitted by
#: ``python benchmarks/memory_budget.py fit benchmarks/results/memory_budget.json``
#: (a linear program: the tightest non-negative coefficients above every
#: measurement, then 5% to spare) to the measurements in
#: benchmarks/results/memory_budget.md.
MEMORY_COEFFICIENTS = {
    "hidden": 0.0,
    "intermediate": 8.443,
    "scores_band": 7.277,
    "scores_full": 1.05,
    "quadratic": 3.663,
    "token": 2891.0,
    "step": 0.0,
}


def _padded_tokens(config, n_tokens: int) -> int:
    window = getattr(config, "attention_window", None)
    if window is None:
        return n_tokens
    largest = max(window) if isinstance(window, (list, tuple)) else int(window)
    return -(-n_tokens // largest) * largest


def memory_features(config, n_tokens: int, fast_attention: bool) -> dict[str, float]:
    """The per-example quantities the memory model weighs, for a document of
    ``n_tokens`` tokens (N, padded as the model pads it), as bytes of
    float32 values: ``hidden`` = 4 N x layers x hidden, ``intermediate`` =
    4 N x layers x intermediate (activations kept for the backward pass;
    pyattn's fast attention keeps its key and value blocks, about 6 x hidden
    per token and layer, in these), ``scores_band`` = 4 N x sum over layers of
    heads x (window + 2) (transformers' Longformer attention keeps its band
    of scores), ``scores_full`` = 4 N x layers x heads x N (full attention),
    ``quadratic`` = N^2 and ``token`` = 4 N (what grows with the length
    alone: masks, index tensors, allocator slack)."""
    layers = int(getattr(config, "num_hidden_layers", 12))
    hidden = int(getattr(config, "hidden_size", 768))
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    heads = int(getattr(config, "num_attention_heads", 12))
    window = getattr(config, "attention_window", None)
    n = _padded_tokens(config, int(n_tokens))
    features = {
        "hidden": 4.0 * n * layers * hidden,
        "intermediate": 4.0 * n * layers * intermediate,
        "scores_band": 0.0,
        "scores_full": 0.0,
        "quadratic": float(n) * n,
        "token": 4.0 * n,
    }
    if window is None:
        features["scores_full"] = 4.0 * n * layers * heads * n
    elif not fast_attention:
        windows = [int(window[l] if isinstance(window, (list, tuple)) else window) for l in range(layers)]
        features["scores_band"] = 4.0 * n * sum(heads * (w + 2) for w in windows)
    return features


def predicted_step_bytes(model: torch.nn.Module, n_tokens: int, batch: int = 1, fast_attention: bool | None = None, autocast: bool = False) -> int:
    """Predicted extra resident memory (bytes) of one forward + backward of
    ``batch`` interpolation nodes of an ``n_tokens``-token document:
    ``batch`` times the weighted :func:`memory_features` (activations kept
    for the backward pass, attention scores), plus under autocast a
    half-precision copy of the weights. An upper bound of every measurement
    in benchmarks/results/memory_budget.md.

    Parameters
    ----------
    model : torch.nn.Module
        The sequence classifier (its ``config`` and weights are read).
    n_tokens : int
        Document length in tokens ([CLS] and [SEP] included); Longformer
        models pad it to a multiple of their largest window.
    batch : int
        Interpolation nodes run at once (0: nothing runs, 0 bytes; under
        ``autocast`` still the half-precision weights).
    fast_attention : bool or None
        Longformer only: pyattn's banded attention (None: as ``attribute``
        chooses, on for Longformer models).
    autocast : bool
        Under bfloat16/float16 autocast (the float32 prediction, an upper
        bound, plus the half-precision copies of the weights).

    Returns
    -------
    int
        Bytes, on top of what the process already holds (the model's own
        weights are not counted). A prediction from the fitted coefficients,
        not a measurement.

    Examples
    --------
    >>> import pyattn
    >>> model, _ = pyattn.load_demo()
    >>> one, two = predicted_step_bytes(model, 512, batch=1), predicted_step_bytes(model, 512, batch=2)
    >>> one < two < predicted_step_bytes(model, 1024, batch=2)  # grows with the batch and the length
    True
    >>> two - one == one - predicted_step_bytes(model, 512, batch=0)  # linear in the batch
    True
    >>> predicted_step_bytes(model, 500) == one  # the demo pads to a multiple of its largest window, 128
    True
    """
    config = model.config
    if fast_attention is None:
        fast_attention = getattr(config, "attention_window", None) is not None
    features = memory_features(config, n_tokens, bool(fast_attention))
    per_example = sum(MEMORY_COEFFICIENTS[name] * value for name, value in features.items())
    total = per_example * int(batch) + (MEMORY_COEFFICIENTS["step"] if batch else 0)
    if autocast:
        total += 2 * sum(p.numel() for p in model.parameters())  # half-precision copies of the weights
    return int(math.ceil(total))


def memory_model_description() -> str:
    """The per-step memory model in words, with its coefficients."""
    c = MEMORY_COEFFICIENTS
    return (
        "Model (`pyattn.attribution.predicted_step_bytes`): bytes of one step = batch x 4 N x "
        f"({c['hidden']:.4g} L h + {c['intermediate']:.4g} L i + {c['scores_band']:.4g} sum_l H (w_l + 2) [transformers' Longformer attention] "
        f"+ {c['scores_full']:.4g} L H N [full attention] + {c['token']:.4g}) + batch x {c['quadratic']:.4g} N^2 + {c['step']:.4g}, "
        "N the padded length, L layers, h hidden, i intermediate, H heads, w_l a layer's window; pyattn's fast attention adds no score "
        "term (its key and value blocks are counted in the activations); under autocast the float32 prediction plus 2 bytes per weight. "
        "Coefficients: `benchmarks/memory_budget.py fit` (the tightest non-negative ones above every row below, then 5% to spare)."
    )


#: The default memory budget (process resident memory on a CPU): the smaller
#: of this cap and what the process holds plus half the memory available.
#: With it a Longformer-base-shaped model (1.0 GB held) runs documents of up
#: to about 3,700 tokens within the prediction; longer ones run at batch 1
#: with a warning (a 4,096-token document measured 5.8 GB peak RSS, under
#: 6 GB: benchmarks/results/memory_budget.md).
DEFAULT_MEMORY_CAP = 6 * 10**9
DEFAULT_MEMORY_FRACTION = 0.5

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


class MemoryBudgetWarning(UserWarning):
    """Even one integration step of a document is predicted to exceed the
    memory budget; it runs at batch 1 anyway."""


def parse_memory_budget(value) -> int | None:
    """A memory budget in bytes: a positive number of bytes, or a string such
    as ``"6GB"``, ``"500 MB"``, ``"4GiB"`` (GB = 10**9 bytes, GiB = 2**30).
    None stays None (the default rule). Anything else is a one-line
    ValueError naming the value.

    Examples
    --------
    >>> parse_memory_budget("6GB"), parse_memory_budget("1.5 GiB"), parse_memory_budget(4096)
    (6000000000, 1610612736, 4096)
    """
    import re

    if value is None:
        return None
    expected = 'a positive number of bytes or a size such as "6GB", "500MB" or "4GiB"'
    if isinstance(value, bool):
        raise InputError(f"memory_budget must be {expected}, got {value!r}")
    if isinstance(value, (int, np.integer, float, np.floating)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not match or match.group(2).lower() not in _UNITS:
            raise InputError(f"memory_budget must be {expected}, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise InputError(f"memory_budget must be {expected}, got {value!r}")
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise InputError(f"memory_budget must be {expected}, got {value!r}")
    return int(size)


def _format_bytes(size: float) -> str:
    return f"{size / 1e9:.2f} GB" if abs(size) >= 1e9 else f"{size / 1e6:.0f} MB"


def held_bytes(device=None) -> int:
    """What the process holds now: on a CPU its resident memory (after
    handing freed memory back to the OS with ``malloc_trim``), on CUDA the
    memory torch has allocated on the device.

    Parameters
    ----------
    device : torch.device, str or None
        Where to measure (None: CUDA when available, else the CPU, as
        :func:`attribute` chooses).

    Returns
    -------
    int
        Bytes. On a CPU this is the whole process, not only torch's tensors;
        on CUDA only torch's allocated tensors, not its cache or the context.

    Raises
    ------
    ValueError
        When ``device`` is not a torch device.

    Examples
    --------
    >>> import numpy as np
    >>> before = held_bytes("cpu")
    >>> block = np.ones(50_000_000 // 8)  # 50 MB, written, so resident
    >>> held_bytes("cpu") - before > 40_000_000
    True
    >>> held_bytes("nonsense")
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: device must be a torch device such as 'cpu' or 'cuda:0', got 'nonsense'
    """
    device = _resolve_device(device)
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # pragma: no cover - no /proc
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def default_memory_budget(device=None, held: int | None = None) -> int:
    """The budget used when none is given: on a CPU
    ``min(DEFAULT_MEMORY_CAP, held + DEFAULT_MEMORY_FRACTION * available)``
    (6 GB, or less where less memory is free); on CUDA what torch holds plus
    80% of the device's free memory.

    Parameters
    ----------
    device : torch.device, str or None
        Where the attribution runs (None: CUDA when available, else the CPU).
    held : int or None
        Bytes the process holds now (None: :func:`held_bytes` measures it).

    Returns
    -------
    int
        The budget in bytes, for the whole process (what it holds included):
        what an attribution may add is the budget minus ``held``. It depends
        on the memory free on this machine now.

    Raises
    ------
    ValueError
        When ``device`` is not a torch device.

    Examples
    --------
    >>> budget = default_memory_budget("cpu", held=10**8)
    >>> 10**8 < budget <= DEFAULT_MEMORY_CAP  # at most 6 GB, and more than what is held
    True
    >>> default_memory_budget("cpu", held=10**10) == DEFAULT_MEMORY_CAP  # holding more than the cap: the cap
    True
    """
    device = _resolve_device(device)
    held = held_bytes(device) if held is None else held
    if device.type == "cuda":
        return int(held + 0.8 * _available_bytes(device))
    return int(min(DEFAULT_MEMORY_CAP, held + DEFAULT_MEMORY_FRACTION * _available_bytes(device)))


def batch_for_budget(model: torch.nn.Module, n_tokens: int, n_steps: int, allowance: int, fast_attention: bool | None = None, autocast: bool = False) -> int:
    """The largest batch (at most ``n_steps``) whose predicted step
    (:func:`predicted_step_bytes`) fits in ``allowance`` bytes; 0 when not
    even one step fits.

    Parameters
    ----------
    model : torch.nn.Module
        The sequence classifier (as for :func:`predicted_step_bytes`).
    n_tokens : int
        Document length in tokens (the longest of the batch).
    n_steps : int
        Interpolation nodes wanted: the batch is never larger.
    allowance : int
        Bytes a step may add to what the process holds (a budget minus
        :func:`held_bytes`).
    fast_attention, autocast
        As for :func:`predicted_step_bytes`.

    Returns
    -------
    int
        The batch, 0 to ``n_steps``; a caller that must run anyway runs at
        batch 1 (as :func:`attribute` does, with a ``MemoryBudgetWarning``).

    Examples
    --------
    >>> import pyattn
    >>> model, _ = pyattn.load_demo()
    >>> allowance = predicted_step_bytes(model, 512, batch=3)  # exactly three steps
    >>> batch_for_budget(model, 512, 16, allowance), batch_for_budget(model, 512, 2, allowance)
    (3, 2)
    >>> batch_for_budget(model, 512, 16, allowance - 1)  # a byte less: two
    2
    >>> batch_for_budget(model, 512, 16, allowance=1000)  # not even one step
    0
    """
    def predicted(batch: int) -> int:
        return predicted_step_bytes(model, n_tokens, batch, fast_attention, autocast)

    fixed = predicted(0)  # 0 without autocast (the per-step constant counts from batch 1); the loops below settle rounding
    per_step = max(1, predicted(1) - fixed)
    batch = int(max(0, min(n_steps, (allowance - fixed) // per_step)))
    while batch < n_steps and predicted(batch + 1) <= allowance:  # rounding
        batch += 1
    while batch > 0 and predicted(batch) > allowance:
        batch -= 1
    return batch


def auto_batch_size(model: torch.nn.Module, n_tokens: int, n_steps: int, device=None, memory_budget: int | str | None = None) -> int:
    """The batch :func:`attribute` chooses for one document of ``n_tokens``
    tokens and ``n_steps`` nodes: the largest whose predicted step fits in
    ``memory_budget`` (None: :func:`default_memory_budget`) minus what the
    process holds now (:func:`batch_for_budget`). At least 1, at most
    ``n_steps``.

    >>> import pyattn
    >>> model, _ = pyattn.load_demo()
    >>> 1 <= auto_batch_size(model, n_tokens=512, n_steps=16) <= 16
    True
    >>> auto_batch_size(model, n_tokens=512, n_steps=16, memory_budget=1)  # not even one step fits: 1 anyway
    1
    """
    device = _resolve_device(device)
    held = held_bytes(device)
    budget = parse_memory_budget(memory_budget)
    budget = default_memory_budget(device, held) if budget is None else budget
    return max(1, batch_for_budget(model, n_tokens, n_steps, budget - held))


# --------------------------------------------------------------------------- the path integral


class _Stop(Exception):
    """Raised by the capture hook: the model need not run past the embeddings."""


class _PathIntegrand:
    """The integrand of Layer Integrated Gradients for one document: for each
    node alpha, the target probability and the per-token projection
    ``sum_e (E_in - E_base)[t, e] * dF/dE[t, e]`` (float64, (N_layer,)).
    Nodes of several documents run in one batch with :func:`_evaluate_group`."""

    def __init__(self, model, document, target: int | None, autocast_dtype, device):
        self.model = model
        self.layer = embedding_layer(model)
        self.document = document
        self.target = target
        self.autocast_dtype = autocast_dtype
        self.device = device
        self.output = output_kind(model)  # what F is
        self.forward_examples = 0
        self.endpoints: dict[float, np.ndarray] = {}  # alpha -> (C,) outputs F
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
        return _evaluate_group([(self, list(alphas))])[0]

    def plain_forward(self, autocast: bool = True) -> np.ndarray:
        """F of the model on (input, baseline), (2, C), one no-grad forward."""
        ids = torch.cat([self.document.input_ids, self.document.baseline_ids])
        with torch.no_grad(), (self._autocast() if autocast else nullcontext()):
            logits = self.model(**self._model_kwargs(2, ids)).logits
        self.forward_examples += 2
        return model_output(logits, self.output).cpu().numpy()

    def run_endpoints(self) -> None:
        """F(input) and F(baseline) by a plain forward (for rules without the ends)."""
        both = self.plain_forward()
        self.endpoints[1.0], self.endpoints[0.0] = both[0], both[1]
        if self.target is None:
            self.target = int(both[0].argmax())

    def gap(self) -> float:
        """F(input) - F(baseline) for the target class."""
        return float(self.endpoints[1.0][self.target]) - float(self.endpoints[0.0][self.target])


def _group_kwargs(parts) -> dict:
    """Model inputs of several documents' nodes in one batch: each document's
    row repeated once per node, padded at the end to the longest document
    (attention mask 0, no global attention: the padding is invisible to the
    real tokens, as the model's own padding is)."""
    if len(parts) == 1:
        integrand, alphas = parts[0]
        return integrand._model_kwargs(len(alphas))
    config = parts[0][0].model.config
    pad_id = getattr(config, "pad_token_id", None) or 0
    # padded positions are masked and their embeddings replaced: any valid id will do
    pad_values = {"input_ids": pad_id, "attention_mask": 0, "position_ids": 0, "global_attention_mask": 0}
    longest = max(integrand.document.input_ids.shape[1] for integrand, _ in parts)
    rows: dict[str, list[torch.Tensor]] = {}
    for integrand, alphas in parts:
        for name, value in integrand.document.forward_kwargs().items():
            value = torch.nn.functional.pad(value, (0, longest - value.shape[1]), value=pad_values.get(name, 0))
            rows.setdefault(name, []).append(value.expand(len(alphas), -1))
    return {name: torch.cat(values) for name, values in rows.items()}


def _evaluate_group(parts: Sequence[tuple[_PathIntegrand, list[float]]]) -> list[np.ndarray]:
    """One forward + backward for the nodes of one or more documents (same
    model, autocast and device). Returns each document's projected gradients,
    ``(len(alphas), N_layer)`` float64, in order. Rows do not interact (the
    model runs in eval mode), so each document's result is the one it gets
    alone; a document without a target yet must start at alpha = 1."""
    first = parts[0][0]
    dtype = first.embedded_input.dtype
    leaves = []
    for integrand, alphas in parts:
        alpha = torch.tensor([float(a) for a in alphas], dtype=dtype, device=first.device)[:, None, None]
        leaves.append(((1 - alpha) * integrand.embedded_baseline + alpha * integrand.embedded_input).requires_grad_(True))

    def replace(module, args, output):
        if not isinstance(output, torch.Tensor):
            return output
        if len(leaves) == 1:
            return leaves[0].to(output.dtype)
        length = output.shape[1]
        if any(leaf.shape[1] > length for leaf in leaves):
            raise RuntimeError("internal error: a document's embeddings are longer than the group's")
        padded = [torch.nn.functional.pad(leaf, (0, 0, 0, length - leaf.shape[1])) for leaf in leaves]
        return torch.cat(padded).to(output.dtype)

    handle = first.layer.register_forward_hook(replace)
    try:
        with torch.enable_grad(), first._autocast():
            logits = first.model(**_group_kwargs(parts)).logits
        probabilities = model_output(logits, first.output)  # F: softmax, sigmoid or raw
        objective = []
        start = 0
        for integrand, alphas in parts:
            rows = probabilities[start : start + len(alphas)]
            for row, a in enumerate(alphas):
                if a in (0.0, 1.0):
                    integrand.endpoints[float(a)] = rows[row].detach().cpu().numpy()
            if integrand.target is None:
                if alphas[0] != 1.0:
                    raise RuntimeError("internal error: the first node evaluated must be alpha = 1 when the target is not given")
                integrand.target = int(rows[0].argmax())
            objective.append(rows[:, integrand.target].sum())
            start += len(alphas)
        gradients = torch.autograd.grad(torch.stack(objective).sum(), leaves)
    finally:
        handle.remove()
    projected = []
    for (integrand, alphas), gradient in zip(parts, gradients):
        integrand.forward_examples += len(alphas)
        projected.append((gradient.float() * integrand.difference).sum(-1).detach().double().cpu().numpy())
    return projected


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
    raise InputError(f'autocast must be False, True, "bfloat16" or "float16", got {autocast!r}')


#: Under autocast, ``n_steps="auto"`` stops refining once two doublings of
#: the nodes have not halved the completeness error: the error has reached
#: the half-precision rounding floor of the model's outputs, and more nodes
#: only cost time (the result says ``stalled``; in float32 refinement goes
#: on to ``max_steps``, as a steep path can plateau before it resolves).
STALL_FACTOR = 0.5


def _stalled(tries: list[tuple[int, float]], autocast_dtype, n_steps) -> bool:
    if autocast_dtype is None or n_steps != "auto" or len(tries) < 3:
        return False
    return min(error for _, error in tries[-2:]) > STALL_FACTOR * tries[-3][1]


class _DocumentRun:
    """One document's integration, level by level: ``pending`` are the nodes
    its current level still needs (in the order they must run); ``add``
    takes their projected gradients; when a level is complete it is checked
    and either the next level starts or the document is ``finished``."""

    def __init__(self, model, tokenizer, text, target, n_steps, method, tol, max_steps, max_length, autocast_dtype, device, on_progress=None):
        import time

        self.start_time = time.perf_counter()
        self.n_steps, self.method, self.tol, self.on_progress = n_steps, method, tol, on_progress
        self.document = encode(model, tokenizer, text, max_length).to(device)
        self.n_tokens = self.document.input_ids.shape[1]
        self.integrand = _PathIntegrand(model, self.document, target, autocast_dtype, device)
        self.projected = np.zeros((0, self.integrand.difference.shape[1]))
        self.previous_scores, self.previous_steps, self.tries, self.converged = None, None, [], False
        self.finished = self.stalled = False
        self.done = 0
        level = quadrature.level_of(n_steps) if n_steps != "auto" else None
        self.nested = method in quadrature.NESTED_METHODS and (n_steps == "auto" or level is not None)
        if self.nested:
            if n_steps == "auto":
                last_level = int(math.log2(max_steps - 1))
                check_from = min(quadrature.level_of(AUTO_FIRST_STEPS), last_level)
            else:
                last_level = check_from = level
            # levels below the first checked one cost nothing extra (their nodes
            # are a subset): the first batch runs all of the first checked level
            self.levels = list(range(check_from, last_level + 1))
            self._start_level(self.levels.pop(0))
        else:
            self.integrand.run_endpoints()
            alphas, self.weights = quadrature.rule(method, n_steps)
            self.pending = [float(a) for a in alphas]
            self.planned = len(alphas)

    def _start_level(self, level: int) -> None:
        self.level = level
        alphas, self.weights, self.index = quadrature.nested_level(self.method, level)
        self.pending = [float(a) for a in alphas[np.argsort(self.index)][len(self.projected) :]]
        self.planned = len(alphas)

    def add(self, projected: np.ndarray) -> None:
        """The projected gradients of the first ``len(projected)`` pending nodes."""
        self.projected = np.concatenate([self.projected, projected])
        self.pending = self.pending[len(projected) :]
        self.done += len(projected)
        if self.on_progress is not None:
            self.on_progress(self.done, self.planned)
        if not self.pending:
            self._check_level()

    def _check_level(self) -> None:
        integrand = self.integrand
        if self.nested:
            self.scores, self.steps = self.weights @ self.projected[self.index], len(self.index)
            if self.level > 0:
                _, coarse_weights, coarse_index = quadrature.nested_level(self.method, self.level - 1)
                self.previous_scores, self.previous_steps = coarse_weights @ self.projected[coarse_index], len(coarse_index)
        else:
            self.scores, self.steps = self.weights @ self.projected, len(self.weights)
        self.gap = integrand.gap()
        self.delta = float(self.scores[: self.n_tokens].sum()) - self.gap
        self.tries.append((self.steps, abs(self.delta)))
        # a gap of 0 has no relative error to speak of: never converged
        self.converged = self.gap != 0 and abs(self.delta) <= self.tol * abs(self.gap)
        self.stalled = self.stalled or (not self.converged and _stalled(self.tries, integrand.autocast_dtype, self.n_steps))
        if self.nested and self.levels and not (self.converged and self.n_steps == "auto") and not self.stalled:
            self._start_level(self.levels.pop(0))
        else:
            self.finished = True

    def result(self) -> Attribution:
        """The finished document's :class:`Attribution` (under autocast, one
        more plain float32 forward for the float32 gap)."""
        import time

        integrand = self.integrand
        target = integrand.target
        probabilities = integrand.endpoints[1.0]
        float32_gap = None
        if integrand.autocast_dtype is not None:
            exact = integrand.plain_forward(autocast=False)
            float32_gap = float(exact[0, target] - exact[1, target])
        # Longformer pads to a multiple of its window inside: crop to the document.
        n_tokens = self.n_tokens
        final = self.scores[:n_tokens]
        token_change = token_change_max = float("nan")
        score_error = None
        if self.previous_scores is not None:
            difference = final - self.previous_scores[:n_tokens]
            score_error = np.abs(difference)
            norm = float(np.linalg.norm(final))
            token_change = float(np.linalg.norm(difference)) / norm if norm > 0 else float("inf")
            peak = float(np.abs(final).max())
            token_change_max = float(score_error.max()) / peak if peak > 0 else float("inf")
        document = self.document
        return Attribution(
            tokens=document.tokens,
            input_ids=document.input_ids[0].tolist(),
            scores=final.astype(np.float64),
            outputs=np.asarray(probabilities, dtype=np.float32),
            predicted_label=int(np.argmax(probabilities)),
            target=target,
            delta=self.delta,
            output_gap=self.gap,
            n_steps=self.steps,
            model_evaluations=integrand.forward_examples,
            converged=bool(self.converged),
            truncated_tokens=document.truncated_tokens,
            tries=self.tries,
            tol=float(self.tol),
            method=self.method,
            token_change=token_change,
            token_change_max=token_change_max,
            previous_n_steps=self.previous_steps,
            score_error=score_error,
            autocast_dtype=None if integrand.autocast_dtype is None else str(integrand.autocast_dtype).replace("torch.", ""),
            float32_output_gap=float32_gap,
            stalled=bool(self.stalled),
            seconds=time.perf_counter() - self.start_time,
            output=integrand.output,
        )


@preserving(gradients=True)
def attribute_stream(
    model: torch.nn.Module,
    tokenizer,
    texts: Iterable[str],
    targets: Sequence[int | None] | None = None,
    n_steps: int | str = "auto",
    method: str = DEFAULT_METHOD,
    internal_batch_size: int | None = None,
    max_length: int | None = None,
    device=None,
    tol: float = 0.01,
    max_steps: int = AUTO_MAX_STEPS,
    autocast: bool | str = False,
    fast_attention: bool | None = None,
    memory_budget: int | str | None = None,
    group: bool = True,
    on_progress_for: Callable[[int], Callable[[int, int], None] | None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterable[tuple[int, Attribution]]:
    """Attributions of many texts, yielded as ``(index, Attribution)`` as each
    document finishes (not necessarily in order). Arguments as
    :func:`attribute`; each argument is checked before any work.

    With ``group`` (default), the nodes of several documents run in one
    forward + backward when they fit in the batch (``internal_batch_size``
    nodes, or as many as the memory budget allows): each document keeps its
    own rule, refinement and evaluation count, and gets the result it would
    get alone (the rows of a batch do not interact; shorter documents are
    padded with masked positions). ``group=False`` runs one document at a
    time. ``on_progress_for(index)`` gives document ``index``'s progress
    callback (``on_progress(nodes_done, nodes_planned)``), opened when the
    document starts.

    Parameters
    ----------
    model, tokenizer
        The Longformer (or other) sequence classifier and its tokenizer, as
        for :func:`attribute`.
    texts : iterable of str
        The documents (read into a list first).
    targets : sequence of int or None, optional
        One class per text (None in it, or no ``targets``: each document's
        predicted class).
    n_steps, method, internal_batch_size, max_length, device, tol, max_steps, autocast, fast_attention, memory_budget
        As for :func:`attribute`, the same for every document.
    group : bool
        Run the nodes of several documents in one batch (results unchanged).
    on_progress_for : callable, optional
        ``on_progress_for(index)`` returns document ``index``'s progress
        callback, or None.
    on_progress : callable, optional
        One callback for every document, used when ``on_progress_for`` is None.

    Yields
    ------
    (int, Attribution)
        The text's index in ``texts`` and its :class:`Attribution`
        (``scores``: numpy float64, shape (N,), N the document's tokens).
        Completion order, not input order: sort by index when it matters.

    Raises
    ------
    ValueError
        When ``targets`` and ``texts`` differ in length, or any argument (or
        ``targets[i]``, named so) is invalid: raised at the first ``next()``,
        before any document runs.

    Examples
    --------
    >>> import numpy as np, pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> texts = ["a compiler for a typed language", "the match ended in a draw"]
    >>> results = dict(attribute_stream(model, tokenizer, texts, n_steps=9))
    >>> sorted(results), [r.scores.shape for _, r in sorted(results.items())]
    ([0, 1], [(8,), (15,)])
    >>> alone = pyattn.attribute(model, tokenizer, texts[1], n_steps=9)  # grouped = alone
    >>> bool(np.allclose(results[1].scores, alone.scores, atol=1e-6))
    True
    >>> next(attribute_stream(model, tokenizer, texts, targets=[0, 7]))
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: targets[1]: target must be a class index in 0..1 (or None for the predicted class), got 7
    """
    texts = list(texts)
    if targets is None:
        targets = [None] * len(texts)
    if len(targets) != len(texts):
        raise InputError(f"got {len(texts)} texts but {len(targets)} targets")
    device = _check_arguments(model, n_steps, method, tol, max_steps, max_length, None, internal_batch_size, device)
    for index, target in enumerate(targets):
        if target is not None:
            try:
                _check_arguments(model, n_steps, method, tol, max_steps, max_length, target, internal_batch_size, device)
            except ValueError as error:
                raise InputError(f"targets[{index}]: {error}" if len(texts) > 1 else str(error)) from None
    budget = parse_memory_budget(memory_budget)
    autocast_dtype = _autocast_dtype(autocast, device)
    model = model.to(device).eval()

    from pyattn.models.fast_attention import fast_attention_context, longformer_self_attentions

    fast_active = bool(longformer_self_attentions(model)) if fast_attention is None else bool(fast_attention)
    with fast_attention_context(model, fast_attention):
        allowance = None
        if internal_batch_size is None:
            held = held_bytes(device)
            budget = default_memory_budget(device, held) if budget is None else budget
            allowance = budget - held

        def capacity(n_tokens: int, run) -> int:
            if internal_batch_size is not None:
                return internal_batch_size
            fit = batch_for_budget(model, n_tokens, 1 << 30, allowance, fast_active, autocast_dtype is not None)
            if fit == 0 and not getattr(run, "warned", False):
                import warnings

                run.warned = True
                predicted = predicted_step_bytes(model, run.n_tokens, 1, fast_active, autocast_dtype is not None)
                warnings.warn(
                    f"memory budget {_format_bytes(budget)}: one integration step of a {run.n_tokens}-token document is predicted to need "
                    f"{_format_bytes(predicted)} on top of the {_format_bytes(held)} the process holds; running at batch 1 anyway",
                    MemoryBudgetWarning,
                    stacklevel=3,
                )
            return max(1, fit)

        queue = iter(range(len(texts)))
        active: list[tuple[int, _DocumentRun]] = []
        exhausted = False
        while True:
            parts, rows, longest = [], 0, 0
            position = 0
            while True:
                if position == len(active):
                    if exhausted or (active and not group):
                        break
                    index = next(queue, None)
                    if index is None:
                        exhausted = True
                        break
                    callback = on_progress_for(index) if on_progress_for is not None else on_progress
                    active.append((index, _DocumentRun(model, tokenizer, texts[index], targets[index], n_steps, method, tol, max_steps,
                                                       max_length, autocast_dtype, device, callback)))
                index, run = active[position]
                if run.finished:  # finished on its own (nothing pending)
                    position += 1
                    continue
                length = max(longest, run.n_tokens)
                cap = capacity(length, run)
                if rows >= cap:
                    break
                take = min(len(run.pending), cap - rows)
                parts.append((run, take))
                rows, longest = rows + take, length
                position += 1
                if rows >= cap:
                    break
            if not parts:
                for index, run in active:
                    if run.finished:
                        yield index, run.result()
                if exhausted or not active:
                    return
                active = [(i, r) for i, r in active if not r.finished]
                continue
            projected = _evaluate_group([(run.integrand, run.pending[:take]) for run, take in parts])
            for (run, _), p in zip(parts, projected):
                run.add(p)
            still = []
            for index, run in active:
                if run.finished:
                    yield index, run.result()
                else:
                    still.append((index, run))
            active = still
            if exhausted and not active:
                return


@transformers_quiet()
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
    memory_budget: int | str | None = None,
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
        ``"auto"``: refine a nested rule level by level (5, 9, 17, 33, ...
        nodes, each level reusing every earlier node) until
        ``|delta| <= tol * |F(input) - F(baseline)|``, at most ``max_steps``
        nodes. An int: exactly that many nodes (Captum's ``n_steps``), at
        most :data:`MAX_STEPS` (4096).
        Either way ``converged`` says whether ``|delta| <= tol * |gap|``.
    method:
        Quadrature rule: ``"clenshaw-curtis"`` (default, nested; spectrally
        accurate on smooth paths), ``"trapezoid"`` (nested: equally spaced
        nodes, halved per level; fewer nodes when the probability changes in
        a steep step along the path), or Captum's ``"gausslegendre"`` /
        ``"riemann_*"`` (fixed ``n_steps`` only; two extra forwards for
        ``F(input)`` and ``F(baseline)``).
    internal_batch_size:
        Nodes per forward pass; None: as many as ``memory_budget`` allows.
        Given, it wins over the budget.
    max_length:
        Longest input in tokens, [CLS] and [SEP] included; None takes the
        model's limit. Longer texts are truncated with a warning; a
        ``max_length`` over the model's positions is refused.
    device:
        None uses the GPU when there is one.
    tol:
        Completeness tolerance (relative to ``|F(input) - F(baseline)|``).
    max_steps:
        Cap on the nodes of ``n_steps="auto"`` (rounded down to 2**k + 1),
        2..:data:`MAX_STEPS`.
    autocast:
        Run the model under ``torch.autocast``: True (float16 on CUDA,
        bfloat16 on CPU), ``"bfloat16"`` or ``"float16"``. Faster, less exact:
        ``relative_error`` is measured against the autocast model's gap and
        ``float32_relative_error`` against the float32 model's.
    fast_attention:
        Longformer only: run self-attention as blocked banded
        ``scaled_dot_product_attention``
        (:func:`pyattn.models.fast_attention.fast_longformer_attention`), equal to
        transformers' to 1e-5 in float32 (outputs and gradients; tested) and
        several times faster on a CPU. None (default): on for Longformer
        models, under ``autocast`` too (there it is at least as close to the
        float32 model as transformers' own attention under autocast; tested).
    memory_budget:
        The most memory the process may hold while attributing: bytes, or a
        string such as ``"6GB"`` or ``"500MB"``. On a CPU it is the
        process's resident memory (Python, torch and the model included), on
        CUDA the memory torch holds on the device. The batch is the largest
        whose predicted step (:func:`predicted_step_bytes`, an upper bound of
        measured peaks: benchmarks/results/memory_budget.md) fits in the
        budget less what the process holds when the call starts. None: the
        default rule, :func:`default_memory_budget` (on a CPU
        ``min(6 GB, held + half the available memory)``). When not even one
        node fits, a one-line :class:`MemoryBudgetWarning` names the
        document's tokens, the predicted bytes and the budget, and the
        document runs at batch 1.
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
    >>> from pyattn.models.inputs import encode
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = pyattn.attribute(model, tokenizer, "a compiler for a typed language")
    >>> result.tokens, result.scores.shape
    (['<s>', 'a', 'Ġcompiler', 'Ġfor', 'Ġa', 'Ġtyped', 'Ġlanguage', '</s>'], (8,))
    >>> result.converged, result.relative_error <= result.tol
    (True, True)

    Completeness, from first principles: the scores sum to the change of
    the target's probability (``result.output``: softmax for this
    single-label classifier) from the baseline to the input, up to
    ``delta``.

    >>> document = encode(model, tokenizer, "a compiler for a typed language")
    >>> with torch.no_grad():
    ...     p_input = model(**document.forward_kwargs()).logits.softmax(-1)[0, result.target]
    ...     p_baseline = model(**document.forward_kwargs(document.baseline_ids)).logits.softmax(-1)[0, result.target]
    >>> bool(abs(result.scores.sum() - float(p_input - p_baseline) - result.delta) < 1e-6)
    True
    """
    ((_, result),) = attribute_stream(
        model, tokenizer, [text], [target], n_steps=n_steps, method=method, internal_batch_size=internal_batch_size,
        max_length=max_length, device=device, tol=tol, max_steps=max_steps, autocast=autocast, fast_attention=fast_attention,
        memory_budget=memory_budget, group=False, on_progress=on_progress,
    )
    return result


def attribute_many(
    model: torch.nn.Module,
    tokenizer,
    texts: Iterable[str],
    targets: Sequence[int | None] | None = None,
    progress: bool = True,
    group: bool = True,
    **kwargs,
) -> list[Attribution]:
    """:func:`attribute` for many texts, with a progress bar (tqdm). Keyword
    arguments are passed on (and checked once, before the first text);
    ``targets`` gives one target per text. With ``group`` (default) several
    documents' nodes share a forward + backward when they fit
    (:func:`attribute_stream`); every result equals the one-at-a-time result.

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
            raise InputError("give either target (one class for every text) or targets (one per text), not both")
        targets = [kwargs.pop("target")] * len(texts)
    if targets is not None and len(targets) != len(texts):
        raise InputError(f"got {len(texts)} texts but {len(targets)} targets")
    if single_target and texts:
        _check_arguments(model, target=targets[0], **{name: kwargs.get(name, default) for name, default in (
            ("n_steps", "auto"), ("method", DEFAULT_METHOD), ("tol", 0.01), ("max_steps", AUTO_MAX_STEPS),
            ("max_length", None), ("internal_batch_size", None), ("device", None))})
    results: list[Attribution | None] = [None] * len(texts)
    with tqdm(total=len(texts), desc="attributing", unit="doc", disable=not progress) as bar:
        stream = attribute_stream(model, tokenizer, texts, targets, group=group, **kwargs)
        with contextlib.closing(stream):
            for index, result in stream:
                results[index] = result
                bar.update(1)
    return results
