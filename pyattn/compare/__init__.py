"""Comparing attribution with attention: one document or a dataset.

Where things live (data flows down this list):

- :mod:`pyattn.compare.metrics` the one metric core: every metric computed on
  a batch of attention vectors (a single pair is a batch of one);
- :mod:`pyattn.compare.similarity` one document's metrics table per attention
  view and token mask (:func:`pyattn.compare.similarity.compare`), token masks,
  the dataset means;
- :mod:`pyattn.compare.tokens` token tables (supporting, opposing, overlaps,
  per type);
- :mod:`pyattn.compare.significance` per-document permutation p-values;
- :mod:`pyattn.compare.uncertainty` bootstrap intervals over documents, Holm;
- :mod:`pyattn.compare.agreement` the head agreement map across a dataset;
- :mod:`pyattn.compare.faithfulness` comprehensiveness and sufficiency (AOPC),
  which runs the model (imported on its own: ``from
  pyattn.compare.faithfulness import faithfulness``).

The names re-exported here are those ``import pyattn`` gives.
"""

from __future__ import annotations

from pyattn.compare.agreement import head_agreement
from pyattn.compare.significance import document_significance, permutation_test
from pyattn.compare.uncertainty import bootstrap_means, bootstrap_token_means, holm

__all__ = ["bootstrap_means", "bootstrap_token_means", "document_significance", "head_agreement", "holm", "permutation_test"]
