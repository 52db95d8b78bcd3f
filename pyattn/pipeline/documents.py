"""Reading documents: CSV, JSONL or Parquet files (or a Hugging Face dataset)
into :class:`Document` rows, with every id and label checked, never silently
changed.

Running documents into a results store, comparing and reporting live
beside it in :mod:`pyattn.pipeline`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pyattn.errors import DataError  # defined in pyattn.errors; importable here as before 1.1

__all__ = ["Document", "DataError", "load_documents", "skip_reason"]



@dataclass
class Document:
    """One row of the input, as :func:`load_documents` reads it.

    Attributes
    ----------
    doc_id : str
        The id column's value as written, or the row number.
    index : int
        0-based row number in the file.
    text : Any
        As read (not checked here: see :func:`skip_reason`).
    label : int, str or None
        A class index, a class name (mapped through the model's ``label2id``
        by the runner), or None.

    Examples
    --------
    >>> Document("007", 0, "a fine compiler", 1)
    Document(doc_id='007', index=0, text='a fine compiler', label=1)
    """

    doc_id: str
    index: int
    text: Any
    label: int | str | None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _row(index: int, doc_id=None) -> str:
    return f"row {index}" + (f" (id {doc_id!r})" if doc_id is not None else "")


def _label(value, index: int, doc_id: str, column: str) -> int | str | None:
    """A label as read: a whole number, a class name, or missing (None)."""
    if _missing(value):
        return None
    written = value
    if isinstance(value, bool):
        raise DataError(f"{_row(index, doc_id)}: label {value!r} in column {column!r} is a boolean, not a class index or name")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text  # a class name
        value = number
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{_row(index, doc_id)}: label {written!r} in column {column!r} is not a class index or name") from None
    if not math.isfinite(number) or number != int(number):
        raise DataError(f"{_row(index, doc_id)}: label {written!r} in column {column!r} is not a whole number (class indices are 0, 1, ...)")
    return int(number)


def load_documents(path: str, text_column: str = "text", label_column: str | None = "label", id_column: str | None = None) -> list[Document]:
    r"""Documents from a CSV, JSONL or Parquet file, or a Hugging Face dataset
    given as ``name:split`` (needs the ``datasets`` library and network).

    Values are read as written: CSV cells as text (``"NA"`` stays a text,
    ids keep their leading zeros); labels must be whole numbers or class
    names (fractional, boolean and non-finite labels are refused with the row
    named; missing ones are None). ``label_column`` may be absent from the
    file only if given as None; ``id_column`` None numbers the rows from 0,
    and a given id column must have a unique, non-empty id on every row.
    Texts are not checked here: the run skips (and lists) empty or non-string
    ones.

    Parameters
    ----------
    path : str
        A ``.csv``, ``.jsonl`` / ``.ndjson`` or ``.parquet`` file, or
        ``name:split``.
    text_column : str
    label_column : str or None
    id_column : str or None

    Returns
    -------
    list of Document
        In file order.

    Raises
    ------
    DataError
        If the file cannot be read, a column is missing, an id is missing or
        repeated, or a label is not a whole number or a class name.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "reviews.csv")
    ...     with open(path, "w") as handle:
    ...         _ = handle.write("key,text,y\n007,a fine compiler,1\n008,NA,0\n009,,\n")
    ...     documents = load_documents(path, label_column="y", id_column="key")
    >>> [(d.doc_id, d.text, d.label) for d in documents]  # ids keep their zeros, "NA" stays a text
    [('007', 'a fine compiler', 1), ('008', 'NA', 0), ('009', '', None)]
    """
    import pandas as pd

    if os.path.isdir(path):
        raise DataError(f"path={path!r} is a folder; give a .csv, .jsonl or .parquet file")
    if os.path.exists(path):
        lower = path.lower()
        try:
            # utf-8-sig: a byte-order mark (as some editors write) is read, not kept in the first column's name
            if lower.endswith(".csv"):
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            elif lower.endswith((".jsonl", ".ndjson")):
                import io

                with open(path, encoding="utf-8-sig") as handle:
                    frame = pd.read_json(io.StringIO(handle.read()), lines=True, dtype=False)
            elif lower.endswith(".parquet"):
                frame = pd.read_parquet(path)
            else:
                raise DataError(f"cannot tell the format of {path!r}: use a .csv, .jsonl or .parquet file")
        except DataError:
            raise
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise DataError(f"cannot read {path!r}: {type(error).__name__}: {first}") from error
    elif ":" in path and os.path.sep not in path:
        name, split = path.rsplit(":", 1)
        try:
            import datasets
        except ImportError as error:
            raise DataError(f"{path!r} is not a file; reading it as a Hugging Face dataset needs `pip install datasets`") from error
        try:
            frame = datasets.load_dataset(name, split=split).to_pandas()
        except Exception as error:
            raise DataError(f"cannot load the Hugging Face dataset {path!r}: {type(error).__name__}") from error
    else:
        raise DataError(f"data file {path!r} does not exist")
    missing = [c for c in (text_column, label_column, id_column) if c is not None and c not in frame.columns]
    if missing:
        raise DataError(f"{path!r} has no column(s) {missing}; its columns are {list(frame.columns)} (set `text_column`, `label_column` or `id_column`)")
    documents, seen = [], {}
    for index, row in enumerate(frame.itertuples(index=False)):
        values = dict(zip(frame.columns, row))
        if id_column:
            raw = values[id_column]
            if _missing(raw):
                raise DataError(f"{_row(index)}: no id in column {id_column!r} (every row needs one)")
            if isinstance(raw, float) and raw == int(raw):
                raw = int(raw)
            doc_id = str(raw)
        else:
            doc_id = str(index)
        if doc_id in seen:
            raise DataError(f"the ids in column {id_column!r} are not unique: {doc_id!r} on rows {seen[doc_id]} and {index}")
        seen[doc_id] = index
        label = _label(values[label_column], index, doc_id, label_column) if label_column else None
        documents.append(Document(doc_id, index, values[text_column], label))
    return documents


def skip_reason(document: Document) -> str | None:
    """Why a document cannot be attributed (None if it can): its text is not a
    string, or is empty or blank.

    Parameters
    ----------
    document : Document

    Returns
    -------
    str or None

    Examples
    --------
    >>> skip_reason(Document("a", 0, "a fine compiler", 1)), skip_reason(Document("b", 1, "  ", 0)), skip_reason(Document("c", 2, 3.5, 0))
    (None, 'empty text', 'not a string (float)')
    """
    if not isinstance(document.text, str):
        return f"not a string ({type(document.text).__name__})"
    if not document.text.strip():
        return "empty text"
    return None
