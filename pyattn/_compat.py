"""Old module paths kept for one release (pyattn 1.1; they go in 1.2).

``MOVED`` maps a module path of pyattn 1.0 (relative to the package) to its
1.1 home. :func:`install` registers, for each, a forwarding module in
``sys.modules`` under the old dotted name: ``from pyattn.<old> import x`` and
``import pyattn.<old> as m; m.x`` give the new module's ``x`` with a
DeprecationWarning that names the new path. Dunder lookups (what import
machinery and tools probe) are answered without a warning.

The package attribute is left alone where the package has one: ``pyattn.explain``
stays the function :func:`pyattn.explain` (no module is shadowed by a function
in 1.1, because the modules moved). Otherwise ``pyattn.<old>`` is answered by
the package's ``__getattr__`` (:func:`moved_module`) with the forwarding module.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

#: old path -> new path, both relative to ``pyattn``. One line per moved module.
MOVED: dict[str, str] = {
    "explain": "explanation",
    "attention": "model_attention",
    "single_pass": "attribution.single_pass",
    "quadrature": "attribution.quadrature",
    "single_pass_attribution": "attribution.single_pass",
    "importance": "attribution.importance",
    "similarity": "compare.similarity",
    "significance": "compare.significance",
    "uncertainty": "compare.uncertainty",
    "agreement": "compare.agreement",
    "tokens": "compare.tokens",
    "faithfulness": "compare.faithfulness",
    "ops": "kernels.ops",
    "reference": "kernels.reference",
    "layers": "kernels.layers",
    "inputs": "models.inputs",
    "fast_attention": "models.fast_attention",
    "qk_capture": "models.qk_capture",
    "rollout": "model_attention.rollout",
    "dataset": "pipeline.documents",
    "store": "pipeline.store",
    "records": "pipeline.records",
    "ray_engine": "pipeline.ray_engine",
    "runner": "pipeline",
}


def _forwarding_module(old: str, new: str) -> types.ModuleType:
    shim = types.ModuleType(f"pyattn.{old}", f"Deprecated: the module pyattn.{new} (this name goes in pyattn 1.2).")

    def __getattr__(name: str):
        if name.startswith("__") and name != "__all__":
            raise AttributeError(name)
        warnings.warn(f"the module pyattn.{old} is now pyattn.{new}: import {name} from there (pyattn.{old} goes in pyattn 1.2)",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f"pyattn.{new}"), name)

    shim.__getattr__ = __getattr__
    return shim


def install() -> None:
    """Register the forwarding module of every :data:`MOVED` path not yet in
    ``sys.modules`` (idempotent)."""
    for old, new in MOVED.items():
        name = f"pyattn.{old}"
        if name not in sys.modules:
            sys.modules[name] = _forwarding_module(old, new)


def moved_module(name: str) -> types.ModuleType:
    """The package's ``__getattr__``: ``pyattn.<old>`` for a moved module."""
    if name in MOVED:
        install()
        return sys.modules[f"pyattn.{name}"]
    raise AttributeError(f"module 'pyattn' has no attribute {name!r}")
