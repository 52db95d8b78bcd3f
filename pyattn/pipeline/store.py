"""The results store: one directory per dataset run, safe to kill and resume.

```
OUT/
  manifest.json            what ran: model, tokenizer, settings, model facts, pyattn version
  shards/part-000000-<id>.parquet   one record per document, written atomically
  skipped.json             documents that could not be processed, and why
  .pyattn.lock             the writer's lock (its PID inside)
```

A shard is written to a temporary file in the same directory and renamed
into place (``os.replace``), so a shard either exists whole or not at all; a
run killed at any moment loses at most the documents not yet flushed, which a
resumed run redoes. The manifest and the skipped list are written the same
way; a directory left by a run killed while creating its store (only
pyattn's own files, no manifest yet) is taken over as empty.

One writer per store: :meth:`ResultsStore.create` takes an exclusive lock
(``fcntl.flock`` where available, which the kernel releases when the holder
dies, so a lock left by ``kill -9`` is stale by construction; elsewhere an
``O_EXCL`` lock file whose PID is checked). A second run on a held store is
refused with the holder's PID.

pyattn only ever writes, renames or deletes files it created: the manifest,
its shards, the skipped list, the lock and its own temporary files.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from pyattn.errors import InputError, StoreBusy, StoreError  # defined in pyattn.errors; importable here as before 1.1

__all__ = ["ResultsStore", "StoreError", "StoreBusy", "ShardWriter", "MANIFEST"]

MANIFEST = "manifest.json"
SHARDS = "shards"
SKIPPED = "skipped.json"
LOCK = ".pyattn.lock"
FORMAT = 1




def _fault_point(name: str) -> None:
    """Test hook for crash tests: when ``PYATTN_FAULT`` names this point, say
    so in the file ``PYATTN_FAULT_READY`` and wait to be killed. A no-op
    otherwise."""
    if os.environ.get("PYATTN_FAULT") != name:
        return
    ready = os.environ.get("PYATTN_FAULT_READY")
    if ready:
        with open(ready, "w") as f:
            f.write(str(os.getpid()))
    while True:
        time.sleep(0.1)


def _atomic_write_bytes(path: str, data: bytes, fault: str | None = None) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as out:
        half = len(data) // 2
        out.write(data[:half])
        if fault:
            out.flush()
            _fault_point(fault)
        out.write(data[half:])
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: str, value: Any, fault: str | None = None) -> None:
    _atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode(), fault)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lock:
    """An exclusive, non-blocking lock on ``path`` holding the owner's PID."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def _holder(self) -> str:
        try:
            with open(self.path) as f:
                text = f.read().strip()
        except OSError:
            text = ""
        return text if text.isdigit() else "unknown"

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self._acquire_exclusive()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreBusy(
                f"{os.path.dirname(self.path)} is in use by another pyattn run (PID {self._holder()}); "
                "wait for it to finish, or stop it and pass resume=True"
            ) from None
        os.ftruncate(fd, 0)
        _fault_point("lock")
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self.fd = fd

    def _acquire_exclusive(self) -> None:  # pragma: no cover - Windows
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.isdigit() and _pid_alive(int(holder)):
                    raise StoreBusy(f"{os.path.dirname(self.path)} is in use by another pyattn run (PID {holder})") from None
                os.remove(self.path)  # stale: its holder is gone
                continue
            os.write(fd, str(os.getpid()).encode())
            self.fd = fd
            return
        raise StoreBusy(f"{os.path.dirname(self.path)}: could not take the lock")

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def _own_entries_only(path: str) -> bool:
    """True when ``path`` holds nothing but what a killed store creation left:
    the lock, an empty shards folder and pyattn's temporary files."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if name == LOCK or (name.startswith((MANIFEST, SKIPPED)) and name.endswith(".tmp")):
            continue
        if name == SHARDS and os.path.isdir(full) and not os.listdir(full):
            continue
        return False
    return True


@dataclass
class ResultsStore:
    """A results directory (layout in the module docstring). Open it with
    :meth:`create` (new or resumed run, holding the store's lock until
    :meth:`close` or the end of a ``with`` block) or :meth:`open` (read).

    Attributes
    ----------
    path : str
        The directory.

    Records are dicts of one document each (``doc_id``, ``index``,
    ``text_sha1`` and the run's columns); :meth:`records` reads them back as
    one pandas DataFrame in input order.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> out = os.path.join(folder.name, "run")
    >>> manifest = {"model": "demo", "tokenizer": "demo", "settings": {"n_steps": 16}}
    >>> with ResultsStore.create(out, manifest) as store:
    ...     _ = store.write_shard([{"doc_id": "a", "index": 0, "text_sha1": "x1", "attribution": [0.5, -0.25]}])
    ...     store.add_skipped([{"doc_id": "b", "index": 1, "reason": "empty text"}])
    ...     ResultsStore.create(out, manifest, resume=True)  # a second writer while the first holds the lock
    Traceback (most recent call last):
    ...
    pyattn.errors.StoreBusy: ... is in use by another pyattn run (PID ...); wait for it to finish, or stop it and pass resume=True
    >>> ResultsStore.create(out, {**manifest, "settings": {"n_steps": 32}}, resume=True)
    Traceback (most recent call last):
    ...
    pyattn.errors.StoreError: cannot resume ...: the settings differ from its manifest (n_steps: 16 -> 32); use the same settings, a new `path`, or force=True to resume anyway
    >>> done = ResultsStore.open(out)
    >>> done.records()[["doc_id", "attribution"]].values.tolist(), done.done_hashes(), done.skipped()
    ([['a', array([ 0.5 , -0.25])]], {'a': 'x1'}, [{'doc_id': 'b', 'index': 1, 'reason': 'empty text'}])
    >>> sorted(os.listdir(out))
    ['.pyattn.lock', 'manifest.json', 'shards', 'skipped.json']
    >>> folder.cleanup()
    """

    path: str
    _lock: _Lock | None = field(default=None, repr=False, compare=False)

    @property
    def manifest_path(self) -> str:
        """``path/manifest.json``."""
        return os.path.join(self.path, MANIFEST)

    @property
    def shard_dir(self) -> str:
        """``path/shards``, where the Parquet shards are."""
        return os.path.join(self.path, SHARDS)

    # ----------------------------------------------------------- lifecycle
    @classmethod
    def check_target(cls, path: str, resume: bool = False, force: bool = False) -> None:
        """Refuse, before any work, a ``path`` that :meth:`create` would refuse
        for what it holds (a foreign folder, an existing store without
        ``resume``, a file)."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreError(f"path={path!r} is a file, not a directory")
        is_store = os.path.isfile(os.path.join(path, MANIFEST))
        shards = os.path.join(path, SHARDS)
        if not is_store and os.path.isdir(shards) and any(name.endswith(".parquet") for name in os.listdir(shards)):
            raise StoreError(  # not even with force: they would count as done under settings nobody knows
                f"{path} holds result shards but no {MANIFEST}: the settings they were made with are unknown, so they cannot be "
                f"resumed or added to; restore {MANIFEST}, or move {shards} out and start again"
            )
        if os.path.isdir(path) and not is_store and not _own_entries_only(path) and not force:
            raise StoreError(
                f"{path} exists and is not a pyattn results store (no {MANIFEST}); "
                "choose a new `path`, or pass force=True to add a store beside its files (pyattn never touches files it did not write)"
            )
        if is_store and not resume:
            raise StoreError(f"{path} already holds pyattn results: pass resume=True to continue that run, or choose a new `path`")
        existing = os.path.dirname(os.path.abspath(path))
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)  # the folders below it are created
        if not os.path.isdir(path) and not os.access(existing, os.W_OK):
            raise StoreError(f"cannot create path={path!r}: folder {existing} is not writable")

    @classmethod
    def create(cls, path: str, manifest: dict, resume: bool = False, force: bool = False) -> "ResultsStore":
        """Start a run in ``path`` and hold its lock (release with :meth:`close`).

        - A missing or empty directory becomes a new store.
        - An existing store: ``resume=True`` continues it, but only with the
          same settings unless ``force``; without ``resume`` it is refused
          (nothing is overwritten).
        - A non-empty directory that is not a store is refused unless
          ``force`` (then the store is added beside the files already there,
          none of which pyattn touches).
        - A store held by another live run is refused (:class:`StoreBusy`).
        """
        store = cls(os.fspath(path))
        cls.check_target(store.path, resume, force)
        created = not os.path.isdir(store.path)
        try:
            os.makedirs(store.path, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create path={store.path!r}: {error.strerror}") from error
        lock = _Lock(os.path.join(store.path, LOCK))
        try:
            lock.acquire()
        except StoreBusy:
            raise
        store._lock = lock
        try:
            # Checked again under the lock: another run may have made it a store meanwhile.
            cls.check_target(store.path, resume, force)
            if os.path.isfile(store.manifest_path):
                previous = store.manifest()
                differences = _differences(previous.get("settings", {}), manifest.get("settings", {}))
                for key in ("model", "tokenizer"):
                    if previous.get(key) != manifest.get(key):
                        differences.append(f"{key}: {previous.get(key)!r} -> {manifest.get(key)!r}")
                if differences and not force:
                    raise StoreError(
                        f"cannot resume {store.path}: the settings differ from its manifest ({'; '.join(differences)}); "
                        "use the same settings, a new `path`, or force=True to resume anyway"
                    )
                store._remove_own_temporaries()
                return store
            store._remove_own_temporaries()
            os.makedirs(store.shard_dir, exist_ok=True)
            _atomic_write_json(store.manifest_path, {"pyattn_results": FORMAT, **manifest}, fault="manifest")
            return store
        except BaseException:
            store.close()
            if created and _own_entries_only(store.path):
                for name in (LOCK, SHARDS):
                    full = os.path.join(store.path, name)
                    if os.path.isdir(full):
                        os.rmdir(full)
                    elif os.path.exists(full):
                        os.remove(full)
                store._remove_own_temporaries()
                try:
                    os.rmdir(store.path)
                except OSError:
                    pass
            raise

    def close(self) -> None:
        """Release the writer's lock (a no-op for a store opened to read)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def open(cls, path: str) -> "ResultsStore":
        """Open an existing store to read (no lock taken).

        Raises
        ------
        StoreError
            If ``path`` holds no readable pyattn manifest.
        """
        store = cls(os.fspath(path))
        if not os.path.isfile(store.manifest_path):
            raise StoreError(f"{store.path} is not a pyattn results store (no {MANIFEST})")
        store.manifest()
        return store

    def manifest(self) -> dict:
        """The manifest as a dict (``pyattn_results`` format number, model,
        tokenizer, settings, ...); :class:`StoreError` if it cannot be read.
        """
        try:
            with open(self.manifest_path) as f:
                manifest = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"cannot read {self.manifest_path}: {error}") from error
        if not isinstance(manifest, dict) or manifest.get("pyattn_results") != FORMAT:
            raise StoreError(f"{self.manifest_path} is not a pyattn results manifest of format {FORMAT}")
        expected = {"settings": (dict, "an object"), "id2label": (dict, "an object"), "model": (str, "a string"),
                    "tokenizer": (str, "a string"), "num_layers": (int, "a whole number >= 1"), "num_heads": (int, "a whole number >= 1")}
        for key, (kind, what) in expected.items():
            value = manifest.get(key)
            if key in manifest and (not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1)):
                raise StoreError(f"{self.manifest_path}: {key!r} must be {what}, got {value!r} (was the file edited by hand?)")
        return manifest

    def _remove_own_temporaries(self) -> None:
        """Temporary files of a killed run: ours (the .tmp suffix on our names)."""
        for directory in (self.path, self.shard_dir):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name.endswith(".tmp") and (name.startswith("part-") or name.startswith(MANIFEST) or name.startswith(SKIPPED)):
                    os.remove(os.path.join(directory, name))

    # -------------------------------------------------------------- shards
    def shard_paths(self) -> list[str]:
        """The store's complete shards (``shards/part-*.parquet``), sorted."""
        if not os.path.isdir(self.shard_dir):
            return []
        return sorted(os.path.join(self.shard_dir, n) for n in os.listdir(self.shard_dir) if n.startswith("part-") and n.endswith(".parquet"))

    def write_shard(self, records: list[dict]) -> str:
        """Write records (dicts of one document each) as one shard, atomically.
        Attention columns given as float32 numpy arrays are stored as Parquet
        ``list<float32>``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not records:
            raise InputError("a shard needs at least one record")
        table = pa.Table.from_pylist(records)
        if "attention_per_head" in table.column_names and table.schema.field("attention_per_head").type == pa.list_(pa.float64()):
            column = table.column("attention_per_head").cast(pa.list_(pa.float32()))
            table = table.set_column(table.column_names.index("attention_per_head"), "attention_per_head", column)
        sequence = len(self.shard_paths())
        path = os.path.join(self.shard_dir, f"part-{sequence:06d}-{uuid.uuid4().hex[:8]}.parquet")
        tmp = f"{path}.tmp"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        with open(tmp, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            _fault_point("shard")
            out.write(data[len(data) // 2 :])
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
        """The ids of every stored document."""
        return set(self.done_hashes())

    def done_hashes(self) -> dict[str, str | None]:
        """``doc_id -> text_sha1`` of every stored document."""
        done: dict[str, str | None] = {}
        for path in self.shard_paths():
            table = self._read(path)
            ids = table.column("doc_id").to_pylist()
            hashes = table.column("text_sha1").to_pylist() if "text_sha1" in table.column_names else [None] * len(ids)
            done.update(zip(ids, hashes))
        return done

    def records(self):
        """All records as a pandas DataFrame, one row per document, in input order."""
        import pandas as pd
        import pyarrow as pa

        paths = self.shard_paths()
        tables = [self._read(path) for path in paths]
        if not tables:
            return pd.DataFrame()
        try:
            combined = pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StoreError(
                f"the shards of {self.path} do not fit together ({first}): they were written with different "
                "column types (e.g. a label as a class name in one and an index in another)"
            ) from None
        frame = combined.to_pandas()
        return frame.sort_values("index").reset_index(drop=True)

    # ------------------------------------------------------------- skipped
    def skipped(self) -> list[dict]:
        """The skipped documents (dicts with ``doc_id``, ``index`` and why), in input
        order; empty when none.
        """
        path = os.path.join(self.path, SKIPPED)
        if not os.path.exists(path):
            return []
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"cannot read {path}: {error}") from error

    def add_skipped(self, entries: Iterable[dict]) -> None:
        """Add skipped documents (dicts with ``doc_id`` and ``index``; a doc_id
        already listed is replaced), written atomically.
        """
        existing = {e["doc_id"]: e for e in self.skipped()}
        for entry in entries:
            existing[entry["doc_id"]] = entry
        _atomic_write_json(os.path.join(self.path, SKIPPED), sorted(existing.values(), key=lambda e: e["index"]), fault="skipped")


class ShardWriter:
    """The one store writer of both engines: collects records and writes a
    shard every ``size`` records or every ``seconds`` of elapsed time,
    whichever comes first (so a slow run never holds finished work for long).

    Parameters
    ----------
    store : ResultsStore
        Created (holding the lock).
    size : int
        Records per shard.
    seconds : float or None
        Flush when a record arrives this long after the last flush; None: by
        size only.
    clock : callable
        Returns seconds (tests pass a fake clock).

    Attributes
    ----------
    pending : list of dict
        Records not yet written.
    written : int
        Records written so far.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as folder, ResultsStore.create(os.path.join(folder, "run"), {"model": "demo"}) as store:
    ...     writer = ShardWriter(store, size=2, seconds=None)
    ...     writer.add({"doc_id": "a", "index": 0})
    ...     print(len(store.shard_paths()), writer.written)
    ...     writer.add({"doc_id": "b", "index": 1})
    ...     print(len(store.shard_paths()), writer.written)
    0 0
    1 2
    """

    def __init__(self, store: ResultsStore, size: int = 4, seconds: float | None = 60.0, clock=time.monotonic):
        self.store, self.size, self.seconds, self.clock = store, size, seconds, clock
        self.pending: list[dict] = []
        self.written = 0
        self.last = clock()

    def add(self, record: dict) -> None:
        """Queue one record; write a shard when ``size`` or ``seconds`` is reached."""
        self.pending.append(record)
        if len(self.pending) >= self.size or (self.seconds is not None and self.clock() - self.last >= self.seconds):
            self.flush()

    def flush(self) -> None:
        """Write the pending records as one shard (nothing when none are pending)."""
        if self.pending:
            self.store.write_shard(self.pending)
            self.written += len(self.pending)
            self.pending = []
        self.last = self.clock()


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
