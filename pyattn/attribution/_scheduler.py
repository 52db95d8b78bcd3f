"""Which integration nodes run together (private to :mod:`pyattn.attribution`).

:func:`evaluate_group` runs the nodes of one or more documents in one forward
+ backward (rows padded to the longest document; rows do not interact, so each
document gets the result it would get alone). :func:`memory_capacity` gives
the nodes a batch may hold under the memory budget
(:mod:`pyattn.attribution.memory`). :func:`run_documents` fills each batch
with the pending nodes of as many documents as fit and yields each document
when it is finished.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from pyattn.attribution._common import format_bytes
from pyattn.models.recompute import recomputed_layers
from pyattn.attribution.memory import MemoryBudgetWarning, batch_for_budget, default_memory_budget, held_bytes, predicted_step_bytes
from pyattn.models.inputs import model_output

if TYPE_CHECKING:
    from pyattn.attribution._path_integral import DocumentRun, PathIntegrand


def group_kwargs(parts) -> dict:
    """Model inputs of several documents' nodes in one batch: each document's
    row repeated once per node, padded at the end to the longest document
    (attention mask 0, no global attention: the padding is invisible to the
    real tokens, as the model's own padding is)."""
    if len(parts) == 1:
        integrand, alphas = parts[0]
        return integrand.model_kwargs(len(alphas))
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


def evaluate_group(parts: Sequence[tuple[PathIntegrand, list[float]]]) -> list[np.ndarray]:
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
        with torch.enable_grad(), first.autocast_context():
            logits = first.model(**group_kwargs(parts)).logits
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


def memory_capacity(model, device, internal_batch_size: int | None, budget: int | None, fast_attention: bool,
                    autocast: bool, recompute: bool | None = None) -> Callable[[int, Any], int]:
    """``capacity(n_tokens, run)``: the nodes one batch of documents up to
    ``n_tokens`` tokens may hold: ``internal_batch_size`` when given, else the
    largest batch whose predicted step fits in ``budget`` (None: the default
    budget) less what the process holds now, at least 1. When not even one
    node fits, ``run`` (the document that asked) gets one
    :class:`MemoryBudgetWarning`. ``capacity.recomputed(n_tokens)`` says
    whether such a batch runs with activation recomputation: ``recompute``
    when given (or when ``internal_batch_size`` is), else exactly when not
    even one plain node fits the budget."""
    allowance = None
    held = None
    if internal_batch_size is None:
        held = held_bytes(device)
        budget = default_memory_budget(device, held) if budget is None else budget
        allowance = budget - held

    def recomputed(n_tokens: int) -> bool:
        if recompute is not None or internal_batch_size is not None:
            return bool(recompute)
        return batch_for_budget(model, n_tokens, 1, allowance, fast_attention, autocast) == 0

    def capacity(n_tokens: int, run) -> int:
        if internal_batch_size is not None:
            return internal_batch_size
        again = recomputed(n_tokens)
        fit = batch_for_budget(model, n_tokens, 1 << 30, allowance, fast_attention, autocast, recompute=again)
        if fit == 0 and not getattr(run, "warned", False):
            run.warned = True
            predicted = predicted_step_bytes(model, run.n_tokens, 1, fast_attention, autocast, recompute=again)
            warnings.warn(
                f"memory budget {format_bytes(budget)}: one integration step of a {run.n_tokens}-token document is predicted to need "
                f"{format_bytes(predicted)}{' (with activation recomputation)' if again else ''} on top of the {format_bytes(held)} "
                "the process holds; running at batch 1 anyway",
                MemoryBudgetWarning,
                stacklevel=4,  # the frame the warning named when this loop was inline in attribute_stream
            )
        return max(1, fit)

    capacity.recomputed = recomputed
    return capacity


def run_documents(count: int, start: Callable[[int], DocumentRun], capacity: Callable[[int, Any], int],
                  group: bool = True) -> Iterator[tuple[int, DocumentRun]]:
    """Integrate documents ``0 .. count - 1`` (``start(index)`` opens one when
    there is room), yielding ``(index, run)`` as each finishes. Each batch
    takes the pending nodes of the open documents in order, up to
    ``capacity(longest n_tokens, run)`` rows; with ``group=False`` one
    document at a time."""
    queue = iter(range(count))
    active: list[tuple[int, DocumentRun]] = []
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
                active.append((index, start(index)))
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
                    yield index, run
            if exhausted or not active:
                return
            active = [(i, r) for i, r in active if not r.finished]
            continue
        recomputed = getattr(capacity, "recomputed", None)
        with recomputed_layers(parts[0][0].integrand.model) if recomputed is not None and recomputed(longest) else nullcontext():
            projected = evaluate_group([(run.integrand, run.pending[:take]) for run, take in parts])
        for (run, _), p in zip(parts, projected):
            run.add(p)
        still = []
        for index, run in active:
            if run.finished:
                yield index, run
            else:
                still.append((index, run))
        active = still
        if exhausted and not active:
            return
