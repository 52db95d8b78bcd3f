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
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from pyattn.models._state import preserving
from pyattn._quiet import transformers_quiet
from pyattn._malloc import return_freed_memory
from pyattn.attribution import quadrature
from pyattn._checks import resolve_device
from pyattn.attribution._checks import is_int
from pyattn.attribution._common import token_frame
from pyattn.attribution._path_integral import DocumentRun
from pyattn.attribution._scheduler import memory_capacity, run_documents
from pyattn.models.recompute import layer_stack
from pyattn.attribution.memory import parse_memory_budget
from pyattn.errors import InputError
from pyattn.models.inputs import default_max_length, output_kind

__all__ = ["Attribution", "attribute", "attribute_many", "attribute_stream"]

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
            raise InputError("this model has a regression head: its outputs are raw values, not probabilities (read .outputs)")
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
        return token_frame(self.tokens, input_id=self.input_ids, score=self.scores, score_l2_normalised=self.scores_l2_normalised)


def _check_arguments(model, n_steps, method, tol, max_steps, max_length, target, internal_batch_size, device) -> torch.device:
    """Range checks for :func:`attribute`, before any work: one ValueError
    naming the argument, its value and what is allowed."""
    if n_steps != "auto" and not (is_int(n_steps) and 1 <= n_steps <= MAX_STEPS):
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
    if not (is_int(max_steps) and 2 <= max_steps <= MAX_STEPS):
        raise InputError(f"max_steps must be an int 2..{MAX_STEPS}, got {max_steps!r}")
    if max_length is not None and not (is_int(max_length) and max_length >= 3):
        raise InputError(f"max_length must be None or an int >= 3 ([CLS] + one token + [SEP]), got {max_length!r}")
    if max_length is not None and hasattr(getattr(model, "config", None), "max_position_embeddings") and max_length > default_max_length(model):
        positions = default_max_length(model)
        raise InputError(f"max_length {max_length} is over the model's limit of {positions} tokens (its position embeddings); "
                         f"use max_length <= {positions} or None")
    if internal_batch_size is not None and not (is_int(internal_batch_size) and internal_batch_size >= 1):
        raise InputError(f"internal_batch_size must be None (fit to memory) or a positive int, got {internal_batch_size!r}")
    if getattr(model, "config", None) is not None:
        output_kind(model)  # a head pyattn cannot explain: one line, before any work
    num_classes = getattr(getattr(model, "config", None), "num_labels", None)
    if target is not None:
        if not is_int(target) or int(target) < 0 or (num_classes is not None and int(target) >= num_classes):
            allowed = f"a class index in 0..{num_classes - 1}" if num_classes else "a class index >= 0"
            raise InputError(f"target must be {allowed} (or None for the predicted class), got {target!r}")
    return resolve_device(device)


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


def _attribution_of(run: DocumentRun) -> Attribution:
    """The finished document's :class:`Attribution` (under autocast, one
    more plain float32 forward for the float32 gap)."""
    import time

    integrand = run.integrand
    target = integrand.target
    probabilities = integrand.endpoints[1.0]
    float32_gap = None
    if integrand.autocast_dtype is not None:
        exact = integrand.plain_forward(autocast=False)
        float32_gap = float(exact[0, target] - exact[1, target])
    # Longformer pads to a multiple of its window inside: crop to the document.
    n_tokens = run.n_tokens
    final = run.scores[:n_tokens]
    token_change = token_change_max = float("nan")
    score_error = None
    if run.previous_scores is not None:
        difference = final - run.previous_scores[:n_tokens]
        score_error = np.abs(difference)
        norm = float(np.linalg.norm(final))
        token_change = float(np.linalg.norm(difference)) / norm if norm > 0 else float("inf")
        peak = float(np.abs(final).max())
        token_change_max = float(score_error.max()) / peak if peak > 0 else float("inf")
    document = run.document
    return Attribution(
        tokens=document.tokens,
        input_ids=document.input_ids[0].tolist(),
        scores=final.astype(np.float64),
        outputs=np.asarray(probabilities, dtype=np.float32),
        predicted_label=int(np.argmax(probabilities)),
        target=target,
        delta=run.delta,
        output_gap=run.gap,
        n_steps=run.steps,
        model_evaluations=integrand.forward_examples,
        converged=bool(run.converged),
        truncated_tokens=document.truncated_tokens,
        tries=run.tries,
        tol=float(run.tol),
        method=run.method,
        token_change=token_change,
        token_change_max=token_change_max,
        previous_n_steps=run.previous_steps,
        score_error=score_error,
        autocast_dtype=None if integrand.autocast_dtype is None else str(integrand.autocast_dtype).replace("torch.", ""),
        float32_output_gap=float32_gap,
        stalled=bool(run.stalled),
        seconds=time.perf_counter() - run.start_time,
        output=integrand.output,
    )


@preserving(gradients=True)
def attribute_stream(model: torch.nn.Module, tokenizer, texts: Iterable[str], targets: Sequence[int | None] | None = None,
                     n_steps: int | str = "auto", method: str = DEFAULT_METHOD, internal_batch_size: int | None = None,
                     max_length: int | None = None, device=None, tol: float = 0.01, max_steps: int = AUTO_MAX_STEPS,
                     autocast: bool | str = False, fast_attention: bool | None = None, memory_budget: int | str | None = None,
                     recompute: bool | None = None, group: bool = True, on_progress_for: Callable[[int], Callable[[int, int], None] | None] | None = None,
                     on_progress: Callable[[int, int], None] | None = None) -> Iterable[tuple[int, Attribution]]:
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
    n_steps, method, internal_batch_size, max_length, device, tol, max_steps, autocast, fast_attention, memory_budget, recompute
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
    pyattn.errors.InputError
        A ``ValueError``. When ``targets`` and ``texts`` differ in length, or any argument (or
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
    if recompute not in (None, True, False):
        raise InputError(f"recompute must be True, False or None (when one step does not fit the memory budget), got {recompute!r}")
    autocast_dtype = _autocast_dtype(autocast, device)
    if device.type == "cpu":
        return_freed_memory()  # resident memory follows the tensors (pyattn/_malloc.py): the budget means what it says
    model = model.to(device).eval()
    if recompute is not False and layer_stack(model) is None:
        if recompute:
            raise InputError(f"recompute=True needs a stack of config.num_hidden_layers layers; {type(model).__name__} has none")
        recompute = False  # nothing to recompute by: steps that do not fit run at batch 1 with a warning

    from pyattn.models.fast_attention import fast_attention_context, longformer_self_attentions

    fast_active = bool(longformer_self_attentions(model)) if fast_attention is None else bool(fast_attention)
    with fast_attention_context(model, fast_attention):
        capacity = memory_capacity(model, device, internal_batch_size, budget, fast_active, autocast_dtype is not None, recompute)

        def start(index: int) -> DocumentRun:
            callback = on_progress_for(index) if on_progress_for is not None else on_progress
            return DocumentRun(model, tokenizer, texts[index], targets[index], n_steps, method, tol, max_steps, max_length,
                               autocast_dtype, device, callback, first_steps=AUTO_FIRST_STEPS)

        for index, run in run_documents(len(texts), start, capacity, group):
            yield index, _attribution_of(run)


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
    recompute: bool | None = None,
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
        node fits even with activation recomputation (``recompute``), a
        one-line :class:`MemoryBudgetWarning` names the document's tokens,
        the predicted bytes and the budget, and the document runs at batch 1.
    recompute:
        Activation recomputation (:func:`pyattn.models.recompute.recomputed_layers`):
        each layer keeps only its inputs for the backward pass and runs again
        when the backward pass reaches it. The same gradients (to float
        rounding) for about one more forward pass per step, with the
        activations of one layer held at a time instead of every layer's (a
        ModernBERT-base shaped model at 4,096 tokens: 1.6 GB a step instead
        of 7.4 GB; benchmarks/results/memory_budget.md). None (default): on
        for the batches of which not even one node fits the memory budget
        without it (never when ``internal_batch_size`` is given); True or
        False: always or never.
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
        memory_budget=memory_budget, recompute=recompute, group=False, on_progress=on_progress,
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
