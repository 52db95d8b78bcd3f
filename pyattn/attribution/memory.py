"""The memory model and budget of :func:`pyattn.attribute`: how many
integration nodes run in one forward + backward.

A step of ``batch`` nodes of an ``N``-token document is predicted to add
:func:`predicted_step_bytes` to what the process holds (a linear model of
:func:`memory_features`, fitted to measured peaks:
benchmarks/results/memory_budget.md). The budget is given
(:func:`parse_memory_budget`) or :func:`default_memory_budget`; the batch is
the largest that fits (:func:`batch_for_budget`, :func:`auto_batch_size`);
when not even one node fits, a :class:`MemoryBudgetWarning` says so and the
document runs at batch 1.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from pyattn._malloc import trim
from pyattn._checks import resolve_device
from pyattn.errors import InputError

__all__ = [
    "MemoryBudgetWarning",
    "auto_batch_size",
    "batch_for_budget",
    "default_memory_budget",
    "held_bytes",
    "parse_memory_budget",
    "predicted_step_bytes",
]


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
    "hidden": 5.636,
    "intermediate": 7.049,
    "scores_band": 7.277,
    "scores_full": 1.05,
    "quadratic": 3.663,
    "token": 2344.0,
    "step": 0.0,
}


def _padded_tokens(config, n_tokens: int) -> int:
    window = getattr(config, "attention_window", None)
    if window is None:
        return n_tokens
    largest = max(window) if isinstance(window, (list, tuple)) else int(window)
    return -(-n_tokens // largest) * largest


def gated_mlp(model: torch.nn.Module) -> bool:
    """Whether the model's feed-forward blocks are gated (GLU: two
    projections of ``intermediate_size`` per layer, as ModernBERT's ``Wi`` or
    Llama/Qwen2/Mistral's ``gate_proj`` and ``up_proj``), which keep about
    twice the activations of a plain one for the backward pass.

    >>> import pyattn
    >>> gated_mlp(pyattn.load_demo()[0])
    False
    """
    intermediate = getattr(getattr(model, "config", None), "intermediate_size", None)
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "gate_proj":
            return True
        if isinstance(module, torch.nn.Linear) and intermediate and module.out_features == 2 * intermediate:
            return True
    return False


def keeps_attention_scores(config) -> bool:
    """Whether a full-attention model keeps its attention scores for the
    backward pass: eager attention does (N x N per head and layer);
    sdpa, flash and flex attention keep O(N) per head."""
    return getattr(config, "_attn_implementation", "eager") in (None, "eager")


def memory_features(config, n_tokens: int, fast_attention: bool, recompute: bool = False, gated: bool = False) -> dict[str, float]:
    """The per-example quantities the memory model weighs, for a document of
    ``n_tokens`` tokens (N, padded as the model pads it), as bytes of
    float32 values: ``hidden`` = 4 N x layers x hidden (the layers' inputs),
    ``intermediate`` = 4 N x kept x intermediate (activations kept for the
    backward pass, twice the intermediate size for a gated feed-forward block;
    pyattn's fast attention keeps its key and value blocks, about 6 x hidden
    per token and layer, in these), ``scores_band`` = 4 N x sum over kept
    layers of heads x (window + 2) (transformers' Longformer attention keeps
    its band of scores), ``scores_full`` = 4 N x kept x heads x N (eager full
    attention; sdpa keeps no scores), ``quadratic`` = N^2 and ``token`` = 4 N
    (what grows with the length alone: masks, index tensors, allocator
    slack). ``kept`` is the number of layers whose activations are held at
    once: all of them, or one with ``recompute`` (activation recomputation,
    :func:`pyattn.models.recompute.recomputed_layers`, which keeps the layers'
    inputs only and recomputes one layer at a time in the backward pass)."""
    layers = int(getattr(config, "num_hidden_layers", 12))
    hidden = int(getattr(config, "hidden_size", 768))
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden)) * (2 if gated else 1)
    heads = int(getattr(config, "num_attention_heads", 12))
    window = getattr(config, "attention_window", None)
    n = _padded_tokens(config, int(n_tokens))
    kept = 1 if recompute else layers
    features = {
        "hidden": 4.0 * n * layers * hidden,
        "intermediate": 4.0 * n * kept * intermediate,
        "scores_band": 0.0,
        "scores_full": 0.0,
        "quadratic": float(n) * n,
        "token": 4.0 * n,
    }
    if window is None:
        if keeps_attention_scores(config):
            features["scores_full"] = 4.0 * n * kept * heads * n
    elif not fast_attention:
        band = [heads * (int(window[l] if isinstance(window, (list, tuple)) else window) + 2) for l in range(layers)]
        features["scores_band"] = 4.0 * n * (max(band) if recompute else sum(band))
    return features


def predicted_step_bytes(model: torch.nn.Module, n_tokens: int, batch: int = 1, fast_attention: bool | None = None, autocast: bool = False,
                         recompute: bool = False) -> int:
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
    recompute : bool
        With activation recomputation (the layers' inputs kept, one layer's
        activations at a time), as ``attribute`` runs a step that does not
        fit otherwise.

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
    >>> abs((two - one) - (one - predicted_step_bytes(model, 512, batch=0))) <= 1  # linear in the batch (to a rounded byte)
    True
    >>> predicted_step_bytes(model, 500) == one  # the demo pads to a multiple of its largest window, 128
    True
    """
    config = model.config
    if fast_attention is None:
        fast_attention = getattr(config, "attention_window", None) is not None
    features = memory_features(config, n_tokens, bool(fast_attention), bool(recompute), gated_mlp(model))
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
    pyattn.errors.InputError
        (a ValueError) When ``device`` is not a torch device, or names one
        this machine does not have.

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
    pyattn.errors.InputError: device='nonsense' is not a device: use cpu, cuda, cuda:N or mps
    """
    device = resolve_device(device)
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    trim()
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
    pyattn.errors.InputError
        As :func:`held_bytes`, for a ``device`` that is not one of this machine's.

    Examples
    --------
    >>> budget = default_memory_budget("cpu", held=10**8)
    >>> 10**8 < budget <= DEFAULT_MEMORY_CAP  # at most 6 GB, and more than what is held
    True
    >>> default_memory_budget("cpu", held=10**10) == DEFAULT_MEMORY_CAP  # holding more than the cap: the cap
    True
    """
    device = resolve_device(device)
    held = held_bytes(device) if held is None else held
    if device.type == "cuda":
        return int(held + 0.8 * _available_bytes(device))
    return int(min(DEFAULT_MEMORY_CAP, held + DEFAULT_MEMORY_FRACTION * _available_bytes(device)))


def batch_for_budget(model: torch.nn.Module, n_tokens: int, n_steps: int, allowance: int, fast_attention: bool | None = None, autocast: bool = False,
                     recompute: bool = False) -> int:
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
    fast_attention, autocast, recompute
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
        return predicted_step_bytes(model, n_tokens, batch, fast_attention, autocast, recompute)

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
    device = resolve_device(device)
    held = held_bytes(device)
    budget = parse_memory_budget(memory_budget)
    budget = default_memory_budget(device, held) if budget is None else budget
    return max(1, batch_for_budget(model, n_tokens, n_steps, budget - held))

