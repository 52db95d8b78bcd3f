"""Dataset attribution on Ray: documents spread over Ray actors that each load
the model once; the driver alone writes the results store, so the store's
guarantees (atomic shards, resume, settings checks) are the same as for a
single process.

A worker that dies is restarted by Ray and its in-flight document retried
(``max_restarts`` / ``max_task_retries``); a driver that dies loses at most
the documents of the shard it had not yet written, and ``--resume`` redoes
them.

Ray is optional: ``pip install pyattn[ray]``.
"""

from __future__ import annotations

import time
from typing import Sequence

from pyattn.dataset import Document, RunSummary, _ShardWriter, skip_reason
from pyattn.store import ResultsStore

__all__ = ["run_attribution_ray", "RayUnavailable"]


class RayUnavailable(ImportError):
    """Ray is not installed."""


def _ray():
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable("--engine ray needs Ray: pip install 'pyattn[ray]' (or pip install ray)") from error
    return ray


def _worker_class(ray, gpus_per_worker: float):
    @ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=-1, max_task_retries=-1)
    class AttributionWorker:
        """Loads the model once; attributes documents on request."""

        def __init__(self, model: str, tokenizer: str | None, trust_remote_code: bool, device: str | None, threads: int):
            import os

            import torch

            from pyattn.dataset import load_model

            torch.set_num_threads(threads)
            if device is None and gpus_per_worker > 0 and torch.cuda.is_available():
                device = "cuda"
            self.model, self.tokenizer = load_model(model, tokenizer, trust_remote_code, device)
            self.pid = os.getpid()

        def process(self, document: Document, attribute_kwargs: dict) -> dict:
            from pyattn.dataset import process_document

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
) -> RunSummary:
    """:func:`pyattn.dataset.run_attribution` on Ray.

    ``model``/``tokenizer`` are names or paths (``"demo"`` for the shipped
    model) that each worker loads. ``address`` None starts a local Ray
    cluster; otherwise it joins one (``"auto"`` or ``"ray://host:10001"``).
    ``on_workers`` (for tests and monitoring) is called with the actor handles
    once they are up. Results come back in completion order; the store sorts
    them by input index when read.
    """
    from tqdm.auto import tqdm

    ray = _ray()
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        attribute_kwargs = dict(attribute_kwargs or {})
        attribute_kwargs.setdefault("device", device)
        done = store.done_ids()
        todo = [d for d in documents if d.doc_id not in done]
        summary = RunSummary(total=len(documents), already_done=len(documents) - len(todo))
        runnable = []
        for document in todo:
            reason = skip_reason(document)
            if reason:
                summary.skipped.append({"doc_id": document.doc_id, "index": document.index, "reason": reason})
            else:
                runnable.append(document)
        worker_class = _worker_class(ray, gpus_per_worker)
        workers = [worker_class.remote(model, tokenizer, trust_remote_code, device, threads_per_worker) for _ in range(num_workers)]
        if on_workers is not None:
            on_workers(workers)
        writer = _ShardWriter(store, shard_size)
        start = time.perf_counter()
        queue = list(runnable)
        in_flight = {}
        bar = tqdm(total=len(runnable), desc=f"attributing on {num_workers} Ray workers", unit="doc", disable=not progress)
        # Two documents in flight per worker keep each busy while results travel.
        for worker in workers * 2:
            if queue:
                document = queue.pop(0)
                in_flight[worker.process.remote(document, attribute_kwargs)] = worker
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            worker = in_flight.pop(ready[0])
            record = ray.get(ready[0])
            writer.add(record)
            summary.processed += 1
            summary.not_converged += not record["converged"]
            bar.update()
            if queue:
                document = queue.pop(0)
                in_flight[worker.process.remote(document, attribute_kwargs)] = worker
        bar.close()
        writer.flush()
        if summary.skipped:
            store.add_skipped(summary.skipped)
        summary.seconds = time.perf_counter() - start
        for worker in workers:
            ray.kill(worker)
        return summary
    finally:
        if started_here:
            ray.shutdown()
