"""Datasets: documents in, one record per document into a results store,
the store's records compared and reported.

- :mod:`pyattn.pipeline.documents` reads documents (CSV, JSONL, Parquet, a
  Hugging Face dataset) into :class:`Document` rows;
- :mod:`pyattn.pipeline.loading` loads and checks the model, its tokenizer
  and the device, and resolves labels;
- :mod:`pyattn.pipeline.run` runs the documents (the same stages as
  :func:`pyattn.explain`), one :class:`Record` each;
- :mod:`pyattn.pipeline.records` the record and its Parquet row form, and
  :func:`read_records` to read a store back as arrays;
- :mod:`pyattn.pipeline.store` the resumable results store;
- :mod:`pyattn.pipeline.ray_engine` the same run on Ray;
- :mod:`pyattn.pipeline.analysis` ``pyattn compare`` and ``pyattn report``
  over a store.

This package holds what the ``runner`` module of pyattn 1.0 held: every name
that module had is importable from here (the old path forwards, with a
DeprecationWarning, for one release).
"""

from __future__ import annotations

from pyattn.errors import Interrupted, ModelError  # importable here, as from the runner module of 1.0
from pyattn.explanation import label_names
from pyattn.pipeline.analysis import REPORT_MARKER, check_report_dir, compare_results, parse_layer_ranges, report_results, store_shape
from pyattn.pipeline.documents import Document, load_documents, skip_reason
from pyattn.pipeline.loading import check_device, check_model, load_model, quiet_transformers, resolve_labels
from pyattn.pipeline.records import RECORD_COLUMNS, Record, attribution_from_record, read_records, stored_attention
from pyattn.pipeline.run import (
    RunProgress,
    RunSummary,
    build_record,
    finish_run,
    plan_run,
    process_document,
    record_of,
    run_attribution,
    runnable_with_sizes,
    text_hash,
)
from pyattn.pipeline.store import ResultsStore, ShardWriter

# Also importable here, as from the runner module of 1.0, but not user API:
# RECORD_COLUMNS, REPORT_MARKER, RunProgress, ShardWriter, check_model,
# finish_run, quiet_transformers, record_of, runnable_with_sizes,
# skip_reason, store_shape.
__all__ = [
    "Document",
    "Interrupted",
    "ModelError",
    "Record",
    "ResultsStore",
    "RunSummary",
    "attribution_from_record",
    "build_record",
    "check_device",
    "check_report_dir",
    "compare_results",
    "label_names",
    "load_documents",
    "load_model",
    "parse_layer_ranges",
    "plan_run",
    "process_document",
    "read_records",
    "report_results",
    "resolve_labels",
    "run_attribution",
    "text_hash",
]
