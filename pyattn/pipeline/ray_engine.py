"""Dataset attribution on Ray: documents spread over Ray actors that each load
the model once; the driver alone writes the results store, so the store's
guarantees (atomic shards, resume, settings checks) are the same as for a
single process.

A worker that dies is restarted by Ray and its in-flight document retried
(``max_restarts`` / ``max_task_retries``); a driver that dies loses at most
the documents of the shard it had not yet written, and resuming the run (``resume=True``)
redoes them.

Ray is optional: ``pip install pyattn[ray]``.
"""

from __future__ import annotations

import time
from typing import Sequence

from pyattn._checks import first_line
from pyattn.pipeline.documents import Document
from pyattn.errors import DataError, InputError, Interrupted, ModelError, RayRunError, RayUnavailable  # the Ray errors importable here as before 1.1
from pyattn.explanation import label_names
from pyattn.pipeline.loading import load_model, resolve_labels
from pyattn.pipeline.run import RunProgress, RunSummary, finish_run, plan_run, runnable_with_sizes
from pyattn.pipeline.store import ResultsStore, ShardWriter

__all__ = ["run_attribution_ray", "RayUnavailable", "RayRunError"]




def _worker_error(ray, error: BaseException) -> Exception:
    """The error a worker raised, unwrapped from Ray's wrappers, in one line."""
    cause = error
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None) or error
    if isinstance(cause, (DataError, ModelError)):
        return type(cause)(first_line(cause))
    if isinstance(cause, ray.exceptions.RayActorError):
        return RayRunError(f"a Ray worker died and could not be restarted: {first_line(cause, 160)}")
    return RayRunError(f"a Ray worker failed: {type(cause).__name__}: {first_line(cause)}")


def _ray():
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable("the Ray engine needs Ray: pip install 'pyattn[ray]' (or pip install ray)") from error
    return ray


def _worker_class(ray, gpus_per_worker: float):
    @ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=-1, max_task_retries=-1)
    class AttributionWorker:
        """Loads the model once; attributes documents on request."""

        def __init__(self, model: str, tokenizer: str | None, trust_remote_code: bool, device: str | None, threads: int):
            import os

            import torch

            from pyattn.pipeline.loading import load_model

            torch.set_num_threads(threads)
            if device is None and gpus_per_worker > 0 and torch.cuda.is_available():
                device = "cuda"
            self.model, self.tokenizer = load_model(model, tokenizer, trust_remote_code, device)
            self.pid = os.getpid()

        def process(self, document: Document, attribute_kwargs: dict) -> dict:
            from pyattn.pipeline.run import process_document

            return process_document(self.model, self.tokenizer, document, attribute_kwargs)

        def getpid(self) -> int:
            return self.pid

    return AttributionWorker


def run_attribution_ray(
    model: str,
    documents: Sequence[Document],
    store: ResultsStore,
    attribute_kwargs: dict | None = None,
    tokenizer: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    address: str | None = None,
    num_workers: int = 2,
    gpus_per_worker: float = 0,
    threads_per_worker: int = 1,
    shard_size: int = 4,
    progress: bool = True,
    on_workers=None,
    flush_seconds: float | None = 60.0,
    force: bool = False,
    loaded=None,
    label_column: str | None = "label",
) -> RunSummary:
    """:func:`pyattn.pipeline.run_attribution` on Ray, with the same plan, the
    same records and the same store writer (only the driver writes).

    ``model``/``tokenizer`` are names or paths (``"demo"`` for the shipped
    model) that each worker loads; the driver loads and checks it first
    (or takes ``loaded``, a ``(model, tokenizer)`` pair it already checked),
    so a model that cannot run is refused before any worker starts.
    Results come back in completion order; the store sorts them by input
    index when read.

    Parameters
    ----------
    model : str
        ``"demo"``, a folder or a hub name (see :func:`pyattn.pipeline.load_model`).
    documents : sequence of Document
    store : ResultsStore
        Created (holding its lock).
    attribute_kwargs : dict, optional
        Passed to :func:`pyattn.attribute` on the workers.
    tokenizer : str, optional
    trust_remote_code : bool
    device : str, optional
        The workers' device.
    address : str, optional
        None starts a local Ray cluster; otherwise it joins one (``"auto"`` or
        ``"ray://host:10001"``).
    num_workers : int
        Ray actors, each loading the model once.
    gpus_per_worker : float
    threads_per_worker : int
        torch threads per actor.
    shard_size, progress, flush_seconds, force, label_column
        As for :func:`pyattn.pipeline.run_attribution`.
    on_workers : callable, optional
        Called with the actor handles once they are up (for tests and
        monitoring).
    loaded : (model, tokenizer), optional
        Already loaded and checked by the caller (the driver skips loading).

    Returns
    -------
    RunSummary

    Raises
    ------
    RayUnavailable
        If Ray is not installed.
    RayRunError, DataError
        A worker's error, in one line, after the finished documents are
        written.
    Interrupted
        On Ctrl-C, the same way.

    Examples
    --------
    >>> from pyattn.pipeline.documents import load_documents
    >>> from pyattn.pipeline.store import ResultsStore
    >>> documents = load_documents("reviews.csv")  # doctest: +SKIP
    >>> with ResultsStore.create("results", {"model": "demo"}) as store:  # doctest: +SKIP
    ...     summary = run_attribution_ray("demo", documents, store, {"n_steps": "auto"}, num_workers=4)
    >>> summary.processed == len(documents) - len(summary.skipped)  # doctest: +SKIP
    True
    """
    ray = _ray()
    if num_workers < 1:
        raise InputError(f"num_workers must be at least 1, got {num_workers}")
    driver_model, driver_tokenizer = loaded if loaded is not None else load_model(model, tokenizer, trust_remote_code, "cpu")
    attribute_kwargs = dict(attribute_kwargs or {})
    attribute_kwargs.setdefault("device", device)
    documents = resolve_labels(documents, driver_model, label_column)
    names = label_names(driver_model)
    runnable, summary = plan_run(store, documents, force)
    runnable, counts = runnable_with_sizes(driver_tokenizer, runnable, summary, attribute_kwargs.get("max_length"))
    sizes = dict(zip((d.doc_id for d in runnable), counts))
    del driver_model
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    writer = ShardWriter(store, shard_size, flush_seconds)
    start = time.perf_counter()
    bar = RunProgress(list(sizes.values()), progress, desc=f"attributing on {num_workers} Ray workers")
    workers = []
    try:
        worker_class = _worker_class(ray, gpus_per_worker)
        workers = [worker_class.remote(model, tokenizer, trust_remote_code, device, threads_per_worker) for _ in range(num_workers)]
        if on_workers is not None:
            on_workers(workers)
        queue = list(runnable)
        in_flight = {}
        # Two documents in flight per worker keep each busy while results travel.
        for worker in workers * 2:
            if queue:
                document = queue.pop(0)
                in_flight[worker.process.remote(document, attribute_kwargs)] = (worker, document)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            worker, document = in_flight.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except (ray.exceptions.RayError,) as error:
                raise _worker_error(ray, error) from None
            for key, value in (("label_name", names.get(record["label"]) if record["label"] is not None else None),
                               ("predicted_label_name", names.get(record["predicted_label"])),
                               ("target_name", names.get(record["target"]))):
                record[key] = value
            writer.add(record)
            summary.processed += 1
            summary.not_converged += not record["converged"]
            bar.update(sizes[document.doc_id])
            if queue:
                document = queue.pop(0)
                in_flight[worker.process.remote(document, attribute_kwargs)] = (worker, document)
    except KeyboardInterrupt:
        bar.close()
        finish_run(store, writer, summary, start)
        _stop(ray, workers, started_here)
        raise Interrupted(summary) from None
    except BaseException:
        bar.close()
        finish_run(store, writer, summary, start)
        _stop(ray, workers, started_here)
        raise
    bar.close()
    finish_run(store, writer, summary, start)
    _stop(ray, workers, started_here)
    return summary


def _stop(ray, workers, started_here: bool) -> None:
    for worker in workers:
        try:
            ray.kill(worker)
        except Exception:  # already gone
            pass
    if started_here:
        ray.shutdown()
