"""The results store: one directory per dataset run, safe to kill and resume.

```
OUT/
  manifest.json            what ran: model, tokenizer, settings, pyattn version
  shards/part-000000-<id>.parquet   one record per document, written atomically
  skipped.json             documents that could not be processed, and why
```

A shard is written to a temporary file in the same directory and renamed
into place (``os.replace``), so a shard either exists whole or not at all; a
run killed at any moment loses at most the documents of the shard it was
writing, which a resumed run redoes. pyattn only ever writes, renames or
deletes files it created: the manifest, its shards and its own temporary
files.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["ResultsStore", "StoreError", "MANIFEST"]

MANIFEST = "manifest.json"
SHARDS = "shards"
SKIPPED = "skipped.json"
FORMAT = 1


class StoreError(RuntimeError):
    """The results directory cannot be used as asked."""


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: str, value: Any) -> None:
    _atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode())


@dataclass
class ResultsStore:
    """A results directory. Open it with :meth:`create` (new or resumed run)
    or :meth:`open` (read)."""

    path: str

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.path, MANIFEST)

    @property
    def shard_dir(self) -> str:
        return os.path.join(self.path, SHARDS)

    # ----------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: str, manifest: dict, resume: bool = False, force: bool = False) -> "ResultsStore":
        """Start a run in ``path``.

        - A missing or empty directory becomes a new store.
        - An existing store: ``resume=True`` continues it, but only with the
          same settings unless ``force``; without ``resume`` it is refused
          (nothing is overwritten).
        - A non-empty directory that is not a store is refused unless
          ``force`` (then the store is added beside the files already there,
          none of which pyattn touches).
        """
        store = cls(os.fspath(path))
        exists = os.path.isdir(store.path)
        is_store = os.path.isfile(store.manifest_path)
        if exists and not is_store and os.listdir(store.path) and not force:
            raise StoreError(
                f"{store.path} exists and is not a pyattn results store (no {MANIFEST}); "
                "choose a new --out, or pass --force to add a store beside its files (pyattn never touches files it did not write)"
            )
        if is_store:
            if not resume:
                raise StoreError(f"{store.path} already holds pyattn results: pass --resume to continue that run, or choose a new --out")
            previous = store.manifest()
            differences = _differences(previous.get("settings", {}), manifest.get("settings", {}))
            for key in ("model", "tokenizer"):
                if previous.get(key) != manifest.get(key):
                    differences.append(f"{key}: {previous.get(key)!r} -> {manifest.get(key)!r}")
            if differences and not force:
                raise StoreError(
                    f"cannot resume {store.path}: the settings differ from its manifest ({'; '.join(differences)}); "
                    "use the same settings, a new --out, or --force to resume anyway"
                )
            store._remove_own_temporaries()
            return store
        os.makedirs(store.shard_dir, exist_ok=True)
        _atomic_write_json(store.manifest_path, {"pyattn_results": FORMAT, **manifest})
        return store

    @classmethod
    def open(cls, path: str) -> "ResultsStore":
        store = cls(os.fspath(path))
        if not os.path.isfile(store.manifest_path):
            raise StoreError(f"{store.path} is not a pyattn results store (no {MANIFEST})")
        return store

    def manifest(self) -> dict:
        try:
            with open(self.manifest_path) as f:
                manifest = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise StoreError(f"cannot read {self.manifest_path}: {error}") from error
        if manifest.get("pyattn_results") != FORMAT:
            raise StoreError(f"{self.manifest_path} is not a pyattn results manifest of format {FORMAT}")
        return manifest

    def _remove_own_temporaries(self) -> None:
        """Temporary files of a killed run: ours (the .tmp suffix on a shard name)."""
        for directory in (self.path, self.shard_dir):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name.endswith(".tmp") and (name.startswith("part-") or name.startswith(MANIFEST) or name.startswith(SKIPPED)):
                    os.remove(os.path.join(directory, name))

    # -------------------------------------------------------------- shards
    def shard_paths(self) -> list[str]:
        if not os.path.isdir(self.shard_dir):
            return []
        return sorted(os.path.join(self.shard_dir, n) for n in os.listdir(self.shard_dir) if n.startswith("part-") and n.endswith(".parquet"))

    def write_shard(self, records: list[dict]) -> str:
        """Write records (dicts of one document each) as one shard, atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not records:
            raise ValueError("a shard needs at least one record")
        table = pa.Table.from_pylist(records)
        sequence = len(self.shard_paths())
        path = os.path.join(self.shard_dir, f"part-{sequence:06d}-{uuid.uuid4().hex[:8]}.parquet")
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as out:
            pq.write_table(table, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return path

    def _read(self, path: str, columns=None):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path, columns=columns)
        except Exception as error:  # pyarrow raises several types for damaged files
            raise StoreError(
                f"shard {path} is corrupt or unreadable ({type(error).__name__}: {error}); "
                "move it out of the store and resume: its documents will be redone"
            ) from error

    def done_ids(self) -> set[str]:
        done: set[str] = set()
        for path in self.shard_paths():
            done.update(self._read(path, ["doc_id"]).column("doc_id").to_pylist())
        return done

    def records(self):
        """All records as a pandas DataFrame, one row per document, in input order."""
        import pandas as pd
        import pyarrow as pa

        tables = [self._read(path) for path in self.shard_paths()]
        if not tables:
            return pd.DataFrame()
        frame = pa.concat_tables(tables, promote_options="default").to_pandas()
        return frame.sort_values("index").reset_index(drop=True)

    # ------------------------------------------------------------- skipped
    def skipped(self) -> list[dict]:
        path = os.path.join(self.path, SKIPPED)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return json.load(f)

    def add_skipped(self, entries: Iterable[dict]) -> None:
        existing = {e["doc_id"]: e for e in self.skipped()}
        for entry in entries:
            existing[entry["doc_id"]] = entry
        _atomic_write_json(os.path.join(self.path, SKIPPED), sorted(existing.values(), key=lambda e: e["index"]))


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
