"""pyattn: which tokens drove a long-document classifier's prediction, and does
its attention agree?

The compiled core (``pyattn._C``) turns Longformer's banded attention into dense
matrices on request and into attention received per token without ever
building the ``N x N`` matrix. On top of it: Captum attributions done right
(:func:`attribute`), attention from a model (:func:`attention`), head
importance (:mod:`pyattn.importance`) and a shipped demo model
(:func:`load_demo`).
"""

from __future__ import annotations

import torch  # noqa: F401  (the extension needs torch's libraries loaded first)

from pyattn.ops import attention_received, attention_received_layers, band_to_dense, has_cuda_kernels
from pyattn.layers import (
    AttentionReceived,
    DenseTooLarge,
    layer_attention_received,
    layer_to_dense,
)
from pyattn.attribution import Attribution, attribute, attribute_many, auto_batch_size
from pyattn.attention import ModelAttention, attention, attention_from_inputs
from pyattn.importance import head_gate_importance, load_head_importance, save_head_importance, taylor_importance
from pyattn.demo import demo_documents, load_demo
from pyattn.explain import Explanation, attention_views, explain
from pyattn.fast_attention import fast_longformer_attention
from pyattn.single_pass import SinglePass, single_pass, single_pass_from_inputs
from pyattn.significance import document_significance, permutation_test
from pyattn.uncertainty import bootstrap_means, bootstrap_token_means, holm
from pyattn.agreement import head_agreement

__version__ = "0.1.0"

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
    "save_head_importance",
    "single_pass",
    "single_pass_from_inputs",
    "taylor_importance",
    "__version__",
]
