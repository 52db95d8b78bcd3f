"""The user's model and torch's global state, left as pyattn found them.

Every public entry point that runs a model goes through :func:`preserved`
(directly, or as the decorator :func:`preserving`). On the way in it takes the
model's lock and notes what pyattn may change; on the way out (``finally``:
also after an exception, a hook that raised, or Ctrl-C) it puts back:

- the model: each module's ``training`` flag; its hooks (any forward,
  forward-pre, backward or state-dict hook added during the call is removed;
  the user's own, and those transformers installs on a model's first forward
  pass and keeps, are kept); a ``forward`` replaced on the instance (fast
  attention); each parameter's ``requires_grad`` and ``.grad`` (the user's
  gradient tensors are set aside on entry and put back untouched, so a
  backward pass inside pyattn never adds to them or wipes them); the
  attention implementation of every config (``attn_implementation``, which
  pyattn switches to ``"eager"`` to read attention probabilities); the
  device, when the call moved a model that lived on one device.
- torch: grad mode, the deterministic-algorithms flags, the number of
  threads and the default dtype.

Calls that need gradients (attribution, head importance, single-pass
explanations) run with ``gradients=True``: outside inference mode and with
grad enabled, so they work inside ``torch.no_grad()``,
``torch.inference_mode()`` and after ``torch.set_grad_enabled(False)``.

One call at a time per model: two threads calling pyattn on one model take
turns (each gets what it gets alone: the hooks pyattn puts on the model's
layers would otherwise see the other thread's forward passes). A call made
from inside another on the same thread (``explain`` calls ``attribute``)
joins the outer one, which alone restores. A generator entry point
(:func:`pyattn.attribute_stream`) holds the lock only while it computes (not
while it waits at a ``yield``) and restores the model when it ends.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

import torch

__all__ = ["preserved", "preserving"]

_MISSING = object()

# Every dict of hooks an nn.Module keeps (those this torch has).
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
# Dicts of flags (hook id -> bool) kept beside the hooks.
_HOOK_FLAGS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


class _ModelLock:
    """A re-entrant lock and the depth of the owning thread's calls."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0


_locks: "weakref.WeakKeyDictionary[torch.nn.Module, _ModelLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _model_lock(model: torch.nn.Module) -> _ModelLock:
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = _ModelLock()
        return lock


def _configs(model: torch.nn.Module) -> list:
    """Every config object of the model and its submodels (and their
    sub-configs), once each."""
    seen: dict[int, Any] = {}
    pending = [getattr(module, "config", None) for module in model.modules()]
    while pending:
        config = pending.pop()
        if config is None or id(config) in seen or not hasattr(config, "__dict__"):
            continue
        seen[id(config)] = config
        for key in getattr(config, "sub_configs", None) or ():
            pending.append(getattr(config, key, None))
    return list(seen.values())


def _models_own(hook) -> bool:
    """A hook transformers installs on a model's first forward pass and keeps
    (output capturing: ``output_attentions`` depends on it), as the user's
    own call would have: not pyattn's to remove."""
    module = getattr(hook, "__module__", None) or ""
    return module == "transformers" or module.startswith("transformers.")


class _Snapshot:
    """What pyattn may change, noted on entry; :meth:`restore` puts it back."""

    def __init__(self, model, keep_globals: bool = True) -> None:
        self.model = model if isinstance(model, torch.nn.Module) else None
        self.keep_globals = keep_globals
        self.grad_enabled = torch.is_grad_enabled()
        self.deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        self.num_threads = torch.get_num_threads()
        self.default_dtype = torch.get_default_dtype()
        if self.model is None:
            return
        modules = list(self.model.modules())
        self.training = [(m, m.training) for m in modules]
        self.forwards = [(m, m.__dict__.get("forward", _MISSING)) for m in modules]
        self.hooks = [(m, name, set(getattr(m, name))) for m in modules for name in _HOOK_DICTS if isinstance(getattr(m, name, None), dict)]
        self.parameters = [(p, p.requires_grad, p.grad) for p in self.model.parameters()]
        self.configs = [(c, c.__dict__.get("_attn_implementation_internal", _MISSING)) for c in _configs(self.model)]
        devices = {t.device for t in self.model.parameters()} | {t.device for t in self.model.buffers()}
        self.device = devices.pop() if len(devices) == 1 else None
        # The user's gradients are set aside: a backward pass inside pyattn
        # starts from None and never writes into them.
        for parameter, _, _ in self.parameters:
            parameter.grad = None

    def restore(self) -> None:
        if self.keep_globals:
            torch.set_grad_enabled(self.grad_enabled)
            if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != self.deterministic:
                torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
            if torch.get_num_threads() != self.num_threads:
                torch.set_num_threads(self.num_threads)
            if torch.get_default_dtype() != self.default_dtype:
                torch.set_default_dtype(self.default_dtype)
        if self.model is None:
            return
        # Hook ids are unique across modules: those removed from the dicts of
        # hooks are then dropped from the dicts of flags kept beside them.
        removed = set()
        for module, name, keys in self.hooks:
            hooks = getattr(module, name)
            if name not in _HOOK_FLAGS:
                for key in [k for k in hooks if k not in keys and not _models_own(hooks[k])]:
                    del hooks[key]
                    removed.add(key)
        for module, name, keys in self.hooks:
            if name in _HOOK_FLAGS:
                hooks = getattr(module, name)
                for key in [k for k in hooks if k in removed]:
                    del hooks[key]
        for module, forward in self.forwards:
            if forward is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = forward
        for module, training in self.training:
            module.training = training
        for config, implementation in self.configs:
            if implementation is _MISSING:
                config.__dict__.pop("_attn_implementation_internal", None)
            else:
                config.__dict__["_attn_implementation_internal"] = implementation
        if self.device is not None and any(p.device != self.device for p, _, _ in self.parameters):
            self.model.to(self.device)
        for parameter, requires_grad, grad in self.parameters:
            parameter.requires_grad_(requires_grad)
            parameter.grad = grad


@contextmanager
def _turn(model, gradients: bool) -> Iterator[bool]:
    """Hold ``model``'s lock for one stretch of work (gradients on if asked);
    yields whether this is the outermost pyattn call on the model."""
    lock = _model_lock(model) if isinstance(model, torch.nn.Module) else None
    if lock is not None:
        lock.lock.acquire()
    try:
        outermost = lock is None or lock.depth == 0
        if lock is not None:
            lock.depth += 1
        try:
            with ExitStack() as stack:
                if gradients:
                    stack.enter_context(torch.inference_mode(False))
                    stack.enter_context(torch.enable_grad())
                yield outermost
        finally:
            if lock is not None:
                lock.depth -= 1
    finally:
        if lock is not None:
            lock.lock.release()


@contextmanager
def preserved(model, gradients: bool = False) -> Iterator[None]:
    """Run a block with ``model`` to itself and leave it, and torch's global
    state, as found (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The user's model (anything else: only torch's global state is kept).
    gradients : bool
        The block needs autograd: run it outside inference mode, grad enabled.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> model.weight.grad = torch.ones(1, 2)
    >>> with torch.no_grad(), preserved(model, gradients=True):
    ...     _ = model.train(False)
    ...     model(torch.ones(1, 2)).sum().backward()  # grad works, on fresh .grad tensors
    ...     handle = model.register_forward_hook(lambda *args: None)
    >>> model.training, model.weight.grad.tolist(), len(model._forward_hooks)
    (True, [[1.0, 1.0]], 0)
    """
    with _turn(model, gradients) as outermost:
        snapshot = _Snapshot(model) if outermost else None  # a call inside another: the outer one restores
        try:
            yield
        finally:
            if snapshot is not None:
                snapshot.restore()


def _preserved_generator(function: Callable, model, gradients: bool, args, kwargs):
    """A generator entry point: the model is noted at its first step and put
    back when it ends (exhausted, closed, or failed); the lock (and grad
    mode) are held only while it computes, never while it waits at a
    ``yield``, so an abandoned generator blocks no one. torch's global
    state is not restored here (the end may come at any time, from any
    thread): pyattn does not change it."""
    inner = function(*args, **kwargs)
    snapshot = None
    try:
        while True:
            with _turn(model, gradients) as outermost:
                if snapshot is None and outermost and isinstance(model, torch.nn.Module):
                    snapshot = _Snapshot(model, keep_globals=False)
                try:
                    value = next(inner)
                except StopIteration:
                    return
            yield value
    finally:
        with _turn(model, False):
            try:
                inner.close()
            finally:
                if snapshot is not None:
                    snapshot.restore()


def preserving(gradients: bool = False, argument: str = "model") -> Callable:
    """Decorator: run the function inside :func:`preserved` of its ``model``
    argument (a generator function: from its first step to its end, holding
    the model only while it computes).

    Examples
    --------
    >>> import torch
    >>> @preserving()
    ... def switch_off(model):
    ...     model.eval()
    ...     return model.training
    >>> model = torch.nn.Linear(2, 1)
    >>> switch_off(model), model.training
    (False, True)
    """

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        def model_of(args, kwargs):
            bound = signature.bind_partial(*args, **kwargs)
            return bound.arguments.get(argument)

        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def generator(*args, **kwargs):
                return (yield from _preserved_generator(function, model_of(args, kwargs), gradients, args, kwargs))

            return generator

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with preserved(model_of(args, kwargs), gradients):
                return function(*args, **kwargs)

        return wrapper

    return decorate
