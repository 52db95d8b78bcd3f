"""pyattn: which tokens drove a long-document classifier's prediction, and does
its attention agree?

The compiled core (``pyattn._C``) turns Longformer's banded attention into dense
matrices on request and into attention received per token without ever
building the ``N x N`` matrix. On top of it: Captum attributions done right
(:func:`attribute`), attention from a model (:func:`attention`), their
comparison for one document in one call (:func:`explain`), head importance
(:mod:`pyattn.attribution.importance`), dataset runs and reports
(``pyattn`` command) and a shipped demo model (:func:`load_demo`).

Where things live (one home per concern; data flows down this list):

Attention received, a ladder of three rungs
    :mod:`pyattn.kernels` (:mod:`~pyattn.kernels.ops` one layer's band ->
    attention received, the compiled kernels; :mod:`~pyattn.kernels.reference`
    their readable pure-PyTorch versions, for tests;
    :mod:`~pyattn.kernels.layers` a model's attention outputs, every layer,
    any attention kind) -> :mod:`pyattn.model_attention` text through the
    model (:mod:`~pyattn.model_attention.received`);
    :mod:`pyattn.model_attention.rollout` rolls attention out over the layers.
Attribution
    :mod:`pyattn.models.inputs` text -> the tensors, as the model builds them;
    :mod:`pyattn.models.fast_attention` an exact, faster Longformer self-attention.
    The package :mod:`pyattn.attribution`:
    :mod:`~pyattn.attribution.integrated_gradients` Layer Integrated
    Gradients with :mod:`~pyattn.attribution.quadrature`'s nested rules,
    its batches sized by :mod:`~pyattn.attribution.memory`'s budget;
    :mod:`~pyattn.attribution.single_pass` one-pass alternatives (gradient x
    input, attention x gradient, gradient rollout);
    :mod:`~pyattn.attribution.importance` head importance.
Comparing attribution with attention (:mod:`pyattn.compare`)
    :mod:`pyattn.compare.metrics` the one metric core (a pair is a batch of
    one); :mod:`pyattn.compare.similarity` one document's metrics table and
    token masks; :mod:`pyattn.compare.tokens`
    token tables (supporting, opposing, overlaps, per type);
    :mod:`pyattn.compare.faithfulness` comprehensiveness and sufficiency (AOPC);
    :mod:`pyattn.compare.significance` per-document permutation p-values;
    :mod:`pyattn.compare.uncertainty` bootstrap intervals over documents and Holm;
    :mod:`pyattn.compare.agreement` the head agreement map across a dataset.
One document
    :mod:`pyattn.explanation`: :func:`explain` returns an :class:`Explanation`
    (numbers, tables, HTML); its comparison stage, ``compose``, is shared by
    the dataset runner and the reports.
A dataset
    :mod:`pyattn.pipeline`: :mod:`~pyattn.pipeline.documents` reads
    documents; :mod:`~pyattn.pipeline.loading` loads and checks the model;
    :mod:`~pyattn.pipeline.run` runs them (the same stages as
    :func:`explain`), one :class:`~pyattn.pipeline.records.Record` each;
    :mod:`~pyattn.pipeline.store` the resumable results store both engines
    write through; :mod:`~pyattn.pipeline.ray_engine` the same run on Ray;
    :mod:`~pyattn.pipeline.analysis` compares and reports;
    :mod:`pyattn.cli` the ``pyattn`` command over all of it, one module per
    subcommand (``attribute``, ``compare``, ``importance``, ``report``, ``demo``).
Reports
    :mod:`pyattn.report` HTML per document and an index;
    :mod:`pyattn.report.plots` and :mod:`pyattn.report.agreement_plots`
    matplotlib figures as PNG.
The demo
    :mod:`pyattn.demo` the shipped model, tokenizer and documents
    (:mod:`pyattn.demo.data` generates them, :mod:`pyattn.demo.train`
    trains the model).
Errors
    :mod:`pyattn.errors`: one base class, :class:`pyattn.errors.PyattnError`;
    each subclass is also the builtin it replaced (``DataError`` a
    ``ValueError``, ``StoreError`` a ``RuntimeError``, ...). Messages name
    the Python parameter; the ``pyattn`` command names its flags.

Conventions: per-document vectors are numpy float64 over the encoded document
(special tokens included) and tables pandas DataFrames; torch tensors only at
the op and model-output level. Layers and heads are numbered from 0 (negative
from the end), ranges are inclusive; every ranking says whether it is
``signed`` or by ``magnitude``. Every public function and class (each
module's ``__all__``) has a docstring with shapes and an example;
``tests/test_docs.py`` runs them all (but three that need Ray or minutes).
"""

from __future__ import annotations

import torch  # noqa: F401  (the extension needs torch's libraries loaded first)

from pyattn.kernels.ops import attention_received, attention_received_layers, band_to_dense, has_cuda_kernels
from pyattn.kernels.layers import (
    AttentionReceived,
    DenseTooLarge,
    layer_attention_received,
    layer_to_dense,
)
from pyattn.attribution import Attribution, MemoryBudgetWarning, attribute, attribute_many, attribute_stream, auto_batch_size, parse_memory_budget
from pyattn.model_attention import ModelAttention, attention, attention_from_inputs
from pyattn.attribution.importance import head_gate_importance, load_head_importance, save_head_importance, taylor_importance
from pyattn.demo import demo_documents, load_demo
from pyattn.explanation import Explanation, attention_views, explain
from pyattn.models.fast_attention import fast_longformer_attention
from pyattn.attribution.single_pass import SinglePass, single_pass, single_pass_from_inputs
from pyattn.compare.significance import document_significance, permutation_test
from pyattn.compare.uncertainty import bootstrap_means, bootstrap_token_means, holm
from pyattn.compare.agreement import head_agreement
from pyattn.pipeline.records import read_records

__version__ = "0.1.0"


from pyattn import _compat

# Modules moved in 1.1 (so that no function shadows its module, and the folders
# show the architecture): their old paths forward, with a DeprecationWarning,
# for one release.
_compat.install()
__getattr__ = _compat.moved_module

__all__ = [
    "AttentionReceived",
    "Attribution",
    "DenseTooLarge",
    "Explanation",
    "SinglePass",
    "ModelAttention",
    "attention",
    "attention_from_inputs",
    "attention_received",
    "attention_received_layers",
    "attention_views",
    "attribute",
    "attribute_many",
    "attribute_stream",
    "parse_memory_budget",
    "MemoryBudgetWarning",
    "auto_batch_size",
    "band_to_dense",
    "bootstrap_means",
    "bootstrap_token_means",
    "demo_documents",
    "document_significance",
    "explain",
    "fast_longformer_attention",
    "has_cuda_kernels",
    "head_agreement",
    "head_gate_importance",
    "holm",
    "layer_attention_received",
    "layer_to_dense",
    "load_demo",
    "load_head_importance",
    "permutation_test",
    "read_records",
    "save_head_importance",
    "single_pass",
    "single_pass_from_inputs",
    "taylor_importance",
    "__version__",
]
