"""Every refusal pyattn raises on purpose, in one family.

``except pyattn.errors.PyattnError`` catches each refusal of a value, a model,
a data file, a results store, a dense matrix too large or the Ray engine; not
:class:`Interrupted` (a Ctrl-C, which no ``except Exception`` should swallow).
As Python's own functions do, an argument of the wrong *type* raises
``TypeError``, a layer or position out of range ``IndexError``, an unknown
attention view ``KeyError`` and a missing file ``FileNotFoundError``; a
``RuntimeError`` from pyattn is an internal invariant or a kernel's own check.
Each subclass also subclasses the builtin it stood for before pyattn 1.1, so
code written as ``except ValueError`` or ``except RuntimeError`` keeps working:

- :class:`InputError` (a ``ValueError``): an argument is not what was expected;
  :class:`MissingSpecialTokens` is one.
- :class:`ModelError` (a ``ValueError``): a model pyattn cannot explain;
  :class:`NotADistribution` (attention rows that are not probabilities) is one.
- :class:`DataError` (a ``ValueError``): a dataset file or row.
- :class:`StoreError` (a ``RuntimeError``): a results store;
  :class:`StoreBusy` (another run holds it) is one.
- :class:`DenseTooLarge` (a ``MemoryError``): a dense matrix over the limit.
- :class:`RayUnavailable` (an ``ImportError``) and :class:`RayRunError`
  (a ``RuntimeError``): the Ray engine.

:class:`ModelError` and :class:`DataError` are siblings: one ``except`` does
not catch both by accident. Messages name the Python parameter (``device='gpu'
is not a device``); the ``pyattn`` command turns those names into its flags.

The classes are also importable from the modules that raise them
(``pyattn.pipeline.documents.DataError``, ``pyattn.pipeline.ModelError``, ...)
and, through their forwarding modules, from those modules' homes before 1.1:
the same objects.

Examples
--------
>>> from pyattn.errors import DataError, ModelError, PyattnError
>>> issubclass(DataError, ValueError), issubclass(DataError, PyattnError)
(True, True)
>>> issubclass(ModelError, DataError)
False
"""

from __future__ import annotations

__all__ = [
    "PyattnError",
    "InputError",
    "ModelError",
    "NotADistribution",
    "MissingSpecialTokens",
    "DataError",
    "StoreError",
    "StoreBusy",
    "DenseTooLarge",
    "RayUnavailable",
    "RayRunError",
    "Interrupted",
]


class PyattnError(Exception):
    """The base of every exception pyattn raises on purpose (all but
    :class:`Interrupted`); the message is one line that names the parameter or
    the thing at fault and what was expected."""


class InputError(PyattnError, ValueError):
    """An argument is not what the function expects (a device this machine
    lacks, a layer range the model does not have, a malformed size); the
    message names the parameter and what was expected."""


class ModelError(PyattnError, ValueError):
    """The model cannot be explained as asked (no trained classification head, a
    regression head, a tokenizer that does not fit, unreadable weights, no
    usable attentions); one line that says which.
    """


class NotADistribution(ModelError):
    """A layer's attention is not one probability distribution per token (rows
    that do not sum to 1 on the positions used, or a shape other than the
    input's), so attention received would be meaningless: refused."""


class MissingSpecialTokens(InputError):
    """A mask that drops special tokens was asked for without the special
    tokens: it would silently keep them."""


class DataError(PyattnError, ValueError):
    """The input data cannot be read or used as asked (a missing file or column,
    a duplicate id, a label that is not a class); the message names the row.
    """


class StoreError(PyattnError, RuntimeError):
    """The results directory cannot be used as asked (a file, a foreign folder,
    an existing store without resume, other settings, a damaged shard or
    manifest); the message says what to do instead.
    """


class StoreBusy(StoreError):
    """Another live process holds the store's lock; the message gives its PID."""


class DenseTooLarge(PyattnError, MemoryError):
    """The dense ``(B, H, N, N)`` matrix asked for is larger than the configured
    limit (``pyattn.kernels.layers.DEFAULT_DENSE_LIMIT_BYTES`` unless raised): the
    message gives its size; ask for fewer heads or layers, or raise the limit.
    """


class RayUnavailable(PyattnError, ImportError):
    """Ray is not installed (``pip install pyattn[ray]``)."""


class RayRunError(PyattnError, RuntimeError):
    """A Ray worker failed; the message is the worker's error in one line."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C after writing every finished document;
    ``summary`` (:class:`pyattn.pipeline.RunSummary`) says how far it got, and
    resuming the run (``resume=True``) continues it.

    Deliberately not a :class:`PyattnError`: it is a ``KeyboardInterrupt``, and
    an ``except Exception`` must not swallow a Ctrl-C.
    """

    def __init__(self, summary):
        super().__init__(summary)
        self.summary = summary
