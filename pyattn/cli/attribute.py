"""``pyattn attribute``: attribution of every document of a dataset into a
resumable results store (:mod:`pyattn.pipeline.store`), locally or on Ray."""

from __future__ import annotations

import argparse
import os

from pyattn.cli._checks import check_tokenizer_fits
from pyattn.cli._flags import (MAX_STEPS, Refused, device, fail, finite_float, in_flags, memory_budget, positive_int,
                               steps)

__all__: list[str] = []  # the command line is its interface: `pyattn attribute --help`


def _check_model_limits(args, model, tokenizer) -> None:
    from pyattn.models.inputs import default_max_length

    classes = int(model.config.num_labels)
    if args.target is not None and args.target >= classes:
        raise Refused(f"--target {args.target} does not exist: the model has {classes} classes, 0..{classes - 1}")
    if args.max_length is not None:
        limit = default_max_length(model, tokenizer)
        if args.max_length > limit:
            raise Refused(f"--max-length {args.max_length} is over the model's limit of {limit} tokens")


def attribute_command(args: argparse.Namespace) -> int:
    import pyattn
    from pyattn.pipeline.documents import load_documents
    from pyattn.errors import DataError, Interrupted, ModelError, StoreError
    from pyattn.pipeline import label_names, load_model, plan_run, resolve_labels, run_attribution
    from pyattn.pipeline.store import ResultsStore

    if args.engine != "ray":
        used = [flag for flag, value in (("--address", args.address), ("--num-workers", args.num_workers), ("--gpus-per-worker", args.gpus_per_worker)) if value is not None]
        if used:
            return fail(f"{', '.join(used)} only apply with --engine ray")
    num_workers = 2 if args.num_workers is None else args.num_workers
    settings = {
        "n_steps": args.steps,
        "target": args.target,
        "max_length": args.max_length,
        "tol": args.tol,
        "text_column": args.text_column,
        "label_column": args.label_column,
        "id_column": args.id_column,
        "data": os.path.abspath(args.data) if os.path.exists(args.data) else args.data,
    }
    if args.autocast:  # only when given, so stores made without it resume as before
        settings["autocast"] = args.autocast
    if args.attention_route:  # only when given, as --autocast
        settings["attention_route"] = args.attention_route
    try:
        ResultsStore.check_target(args.out, resume=args.resume, force=args.force)
        documents = load_documents(args.data, args.text_column, args.label_column, args.id_column)
        if args.limit:
            documents = documents[: args.limit]
        if not documents:
            raise Refused(f"{args.data} holds no documents")
        model, tokenizer = load_model(args.model, args.tokenizer, args.trust_remote_code, args.device if args.engine == "local" else "cpu")
        _check_model_limits(args, model, tokenizer)
        if args.attention_route:  # a route the model cannot take is refused before the store is made
            from pyattn.model_attention import attention_route

            attention_route(model, args.attention_route)
        check_tokenizer_fits(model, tokenizer, documents, args.data)
        resolve_labels(documents, model, args.label_column)
        config = model.config
        manifest = {
            "model": args.model,
            "tokenizer": args.tokenizer or args.model,
            "settings": settings,
            "pyattn_version": pyattn.__version__,
            "command": "attribute",
            "num_layers": int(config.num_hidden_layers),
            "num_heads": int(config.num_attention_heads),
            "id2label": {str(k): v for k, v in label_names(model).items()},
        }
        store = ResultsStore.create(args.out, manifest, resume=args.resume, force=args.force)
        try:
            plan_run(store, resolve_labels(documents, model, args.label_column))  # refuses changed texts before any work
        except BaseException:
            store.close()
            raise
    except (DataError, ModelError, StoreError, Refused) as error:
        return fail(in_flags(error))
    kwargs = {"n_steps": args.steps, "target": args.target, "max_length": args.max_length, "tol": args.tol,
              "internal_batch_size": args.batch_size, "device": args.device, "memory_budget": args.memory_budget}
    if args.autocast:
        kwargs["autocast"] = args.autocast
    if args.attention_route:
        kwargs["attention_route"] = args.attention_route
    try:
        if args.engine == "ray":
            from pyattn.pipeline.ray_engine import RayRunError, RayUnavailable, run_attribution_ray

            try:
                summary = run_attribution_ray(
                    args.model, documents, store, kwargs, tokenizer=args.tokenizer, trust_remote_code=args.trust_remote_code,
                    device=args.device, address=args.address, num_workers=num_workers,
                    gpus_per_worker=args.gpus_per_worker or 0, shard_size=args.shard_size, progress=not args.quiet,
                    flush_seconds=args.flush_seconds, force=args.force, loaded=(model, tokenizer), label_column=args.label_column,
                )
            except RayUnavailable as error:
                return fail(in_flags(error))
            except RayRunError as error:
                return fail(f"{in_flags(error)}; finished documents are kept in {store.path}: fix it and run again with --resume", 1)
        else:
            summary = run_attribution(model, tokenizer, documents, store, kwargs, shard_size=args.shard_size, progress=not args.quiet,
                                      flush_seconds=args.flush_seconds, force=args.force, label_column=args.label_column)
    except Interrupted as stop:
        done = stop.summary.already_done + stop.summary.processed
        return fail(f"interrupted: {done} of {stop.summary.total} documents are stored in {store.path}; "
                     "run the same command with --resume to continue", 130)
    except (DataError, ModelError, StoreError) as error:
        return fail(f"{in_flags(error)}; finished documents are kept in {store.path}", 1)
    finally:
        store.close()
    if not args.quiet:
        print(f"{summary.processed} documents attributed in {summary.seconds:.1f} s "
              f"({summary.already_done} already done, {len(summary.skipped)} skipped) -> {store.path}")
        _print_flags(store, summary, args.verbose)
        for entry in summary.skipped[: 20 if not args.verbose else None]:
            print(f"  skipped {entry['doc_id']} (row {entry['index']}): {entry['reason']}")
    return 0


def _print_flags(store, summary, verbose: bool) -> None:
    """What the run's summary must say beyond counts: the documents truncated
    to fit the model (how many, how many tokens dropped) and those that did
    not converge, by id (the first 20 unless --verbose), from the store."""
    if not summary.processed:
        return
    import pyarrow as pa

    tables = [store._read(path, columns=["doc_id", "index", "converged", "truncated_tokens"]) for path in store.shard_paths()]
    if not tables:
        return
    frame = pa.concat_tables(tables, promote_options="default").to_pandas().sort_values("index")
    shown = None if verbose else 20

    def ids(rows) -> str:
        names = [str(v) for v in rows["doc_id"]]
        return ", ".join(names[:shown]) + ("" if shown is None or len(names) <= shown else f", ... ({len(names) - shown} more: --verbose)")

    truncated = frame[frame["truncated_tokens"] > 0]
    if len(truncated):
        print(f"{len(truncated)} of the store's {len(frame)} documents were truncated to fit the model: "
              f"{int(truncated['truncated_tokens'].sum()):,} tokens dropped in all ({ids(truncated)}); "
              "their results describe the kept part (column truncated_tokens)")
    failed = frame[~frame["converged"].astype(bool)]
    if len(failed):
        print(f"{len(failed)} of the store's {len(frame)} documents did not converge: their completeness error is above the tolerance "
              f"(with --steps auto: at the step cap; with a fixed --steps: at that count): {ids(failed)}")


def add_parser(commands) -> None:
    """The ``attribute`` subcommand and its flags."""
    attribute_parser = commands.add_parser(
        "attribute", help="attribute every document of a dataset into a resumable results store",
        description="Attribute every document of a dataset into a resumable results store. Each record keeps the "
        "document's attention received per layer and head as Parquet list<float32>: 4 x layers x heads bytes per token "
        "before compression (48 B on the demo model, 576 B on Longformer-base).")
    attribute_parser.add_argument("--model", required=True, help="a model path or name, or 'demo' for the shipped demo model")
    attribute_parser.add_argument("--tokenizer", help="tokenizer path or name (default: the model's; not with --model demo)")
    attribute_parser.add_argument("--data", required=True, help="CSV, JSONL or Parquet file, or a Hugging Face dataset name:split")
    attribute_parser.add_argument("--out", required=True, help="results directory (created; an existing store needs --resume)")
    attribute_parser.add_argument("--text-column", default="text")
    attribute_parser.add_argument("--label-column", default="label", help="label column: class indices or the model's class names ('' for none)")
    attribute_parser.add_argument("--id-column", default=None, help="unique document ids (default: row numbers from 0)")
    attribute_parser.add_argument("--steps", type=steps, default="auto", help=f'integration steps 1..{MAX_STEPS}, or "auto" (default)')
    attribute_parser.add_argument("--tol", type=finite_float("--tol", 0.0, 1.0), default=0.01,
                                  help="completeness tolerance for --steps auto, in (0, 1) (default 0.01)")
    attribute_parser.add_argument("--target", type=positive_int("--target", 0), default=None, help="class to explain, from 0 (default: the predicted class)")
    attribute_parser.add_argument("--max-length", type=positive_int("--max-length", 3), default=None, help="longest input in tokens, [CLS] and [SEP] included (at least 3)")
    attribute_parser.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (default: the GPU when there is one)")
    attribute_parser.add_argument("--autocast", choices=["bfloat16", "float16"], default=None,
                                  help="run the model under torch.autocast in this dtype (faster on a GPU; the completeness error against "
                                       "the float32 model is stored too, as float32_relative_error); default: float32")
    attribute_parser.add_argument("--attention-route", choices=["auto", "qk", "eager"], default=None,
                                  help="how attention received is read: 'qk' from each layer's queries and keys while the model runs its own "
                                       "(sdpa) attention, never N x N; 'eager' from the model's attention probabilities (the reference); "
                                       "'auto' (default): 'qk' where the architecture allows, Longformer's band, else 'eager'")
    attribute_parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=None, help="integration steps per forward pass, over all documents in it (default: as many as --memory-budget allows; given, it wins)")
    attribute_parser.add_argument("--memory-budget", type=memory_budget, default=None,
                                  help='most memory the process may hold, e.g. 6GB or 500MB (default: min(6GB, held + half the available memory)); '
                                       'short documents share a batch within it')
    attribute_parser.add_argument("--shard-size", type=positive_int("--shard-size"), default=4, help="documents per results shard at most (default 4)")
    attribute_parser.add_argument("--flush-seconds", type=finite_float("--flush-seconds", 0.0), default=60.0,
                                  help="write finished documents at least this often, in seconds (default 60)")
    attribute_parser.add_argument("--limit", type=positive_int("--limit"), default=None, help="only the first N documents")
    attribute_parser.add_argument("--resume", action="store_true", help="continue a run in an existing results store")
    attribute_parser.add_argument("--force", action="store_true", help="resume despite different settings, or use a non-empty --out")
    attribute_parser.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model's own code (off by default)")
    attribute_parser.add_argument("--engine", choices=["local", "ray"], default="local", help="local (one process, default) or ray")
    attribute_parser.add_argument("--address", default=None, help="with --engine ray: a cluster to join (default: start a local one)")
    attribute_parser.add_argument("--num-workers", type=positive_int("--num-workers", 1, 1024), default=None,
                                  help="with --engine ray: workers, each loading the model once (default 2)")
    attribute_parser.add_argument("--gpus-per-worker", type=finite_float("--gpus-per-worker", 0.0, low_open=False), default=None,
                                  help="with --engine ray: GPUs per worker (default 0)")
    attribute_parser.add_argument("--quiet", action="store_true")
    attribute_parser.add_argument("--verbose", action="store_true")
    attribute_parser.set_defaults(run=attribute_command)
