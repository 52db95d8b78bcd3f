"""The path integral of integrated gradients, one document at a time
(private to :mod:`pyattn.attribution`; the maths is in
:mod:`pyattn.attribution.integrated_gradients`' docstring).

:class:`PathIntegrand` evaluates the integrand of one document at nodes
alpha (the embedding layer's output interpolated between baseline and input,
one forward + backward, the gradient projected to one number per token);
:class:`DocumentRun` integrates one document level by level of a nested rule
(or once for a fixed rule) and checks convergence after each level. Which
nodes of which documents share a batch is :mod:`pyattn.attribution._scheduler`'s
business.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Sequence

import numpy as np
import torch

from pyattn.attribution import quadrature
from pyattn.attribution._scheduler import evaluate_group
from pyattn.models.inputs import embedding_layer, encode, model_output, output_kind
from pyattn.errors import ModelError


class _Stop(Exception):
    """Raised by the capture hook: the model need not run past the embeddings."""


class PathIntegrand:
    """The integrand of Layer Integrated Gradients for one document: for each
    node alpha, the target probability and the per-token projection
    ``sum_e (E_in - E_base)[t, e] * dF/dE[t, e]`` (float64, (N_layer,)).
    Nodes of several documents run in one batch with :func:`evaluate_group`."""

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

    def model_kwargs(self, batch: int, input_ids: torch.Tensor | None = None) -> dict:
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
                self.model(**self.model_kwargs(2, ids))
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured or not isinstance(captured[0], torch.Tensor):
            raise ModelError(f"the embedding layer of {type(self.model).__name__} did not return one tensor")
        output = captured[0].detach().float()
        return output[:1], output[1:]

    def autocast_context(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def __call__(self, alphas: Sequence[float]) -> np.ndarray:
        """Projected gradients (len(alphas), N_layer) float64. With no target
        yet, the batch must start at alpha = 1: the target becomes the class
        the model predicts there (the model's own input)."""
        return evaluate_group([(self, list(alphas))])[0]

    def plain_forward(self, autocast: bool = True) -> np.ndarray:
        """F of the model on (input, baseline), (2, C), one no-grad forward."""
        ids = torch.cat([self.document.input_ids, self.document.baseline_ids])
        with torch.no_grad(), (self.autocast_context() if autocast else nullcontext()):
            logits = self.model(**self.model_kwargs(2, ids)).logits
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



class DocumentRun:
    """One document's integration, level by level: ``pending`` are the nodes
    its current level still needs (in the order they must run); ``add``
    takes their projected gradients; when a level is complete it is checked
    and either the next level starts or the document is ``finished``."""

    def __init__(self, model, tokenizer, text, target, n_steps, method, tol, max_steps, max_length, autocast_dtype, device, on_progress=None,
                 first_steps: int = 5):
        import time

        self.start_time = time.perf_counter()
        self.n_steps, self.method, self.tol, self.on_progress = n_steps, method, tol, on_progress
        self.document = encode(model, tokenizer, text, max_length).to(device)
        self.n_tokens = self.document.input_ids.shape[1]
        self.integrand = PathIntegrand(model, self.document, target, autocast_dtype, device)
        self.projected = np.zeros((0, self.integrand.difference.shape[1]))
        self.previous_scores, self.previous_steps, self.tries, self.converged = None, None, [], False
        self.finished = self.stalled = False
        self.done = 0
        level = quadrature.level_of(n_steps) if n_steps != "auto" else None
        self.nested = method in quadrature.NESTED_METHODS and (n_steps == "auto" or level is not None)
        if self.nested:
            if n_steps == "auto":
                last_level = int(math.log2(max_steps - 1))
                check_from = min(quadrature.level_of(first_steps), last_level)
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
