"""The ``pyattn`` command.

``pyattn demo`` runs the main job on the shipped default, the demo model and
demo documents: for each document its prediction, token attributions (Layer
Integrated Gradients, steps chosen for 1% completeness), attention received
(final layer, all layers, head-importance scaled, rollout), similarity and
faithfulness, an HTML report per document and an index page (all through
:func:`pyattn.explain`); and a check of the kernels against the pure-PyTorch
dense reference.

``pyattn attribute`` runs attribution over a dataset file into a resumable
results store (:mod:`pyattn.pipeline.store`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

__all__ = ["build_parser", "main"]

DEMO_MARKER = ".pyattn-demo"


def _names(table) -> str:
    return ", ".join(table["token"].tolist()) or "(none)"


def demo(args: argparse.Namespace) -> int:
    """The main job on the shipped demo model: :func:`pyattn.explain` per
    document, an HTML report each and an index page; then a check of the
    compiled kernels against the pure-PyTorch dense reference."""
    import pandas as pd

    import pyattn
    from pyattn.kernels import reference
    from pyattn.report import index_report

    out = args.out
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, DEMO_MARKER)) and not args.force:
        print(f"pyattn: {out} exists and was not written by `pyattn demo`; choose another --out or pass --force "
              "(pyattn only writes its own document-N.html and index.html there)", file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, DEMO_MARKER), "w").close()

    model, tokenizer = pyattn.load_demo()
    documents = [d for d in pyattn.demo_documents("test") if len(d.text.split()) <= args.max_words][: args.documents]
    print(f"pyattn {pyattn.__version__}: demo model ({model.config.num_hidden_layers} layers x "
          f"{model.config.num_attention_heads} heads, windows {model.config.attention_window}), "
          f"{len(documents)} demo documents -> {out}/index.html\n")
    importance = pyattn.taylor_importance(model, tokenizer, [d.text for d in documents], [d.label for d in documents], progress=False)
    rows, failures, k = [], 0, args.top
    for number, document in enumerate(documents, 1):
        start = time.perf_counter()
        result = pyattn.explain(model, tokenizer, document.text, head_importance=importance, device="cpu")
        result.head_importance_name = "Taylor head importance (over the demo documents shown)"
        seconds = time.perf_counter() - start
        name = f"document-{number}.html"
        result.save_html(os.path.join(out, name), title=f"demo document {number}: {document.label_name}")
        a = result.attribution
        metrics = result.similarity[result.similarity["mask"] == "no_special"].set_index("attention")
        aopc = result.faithfulness.set_index("ranking")["comprehensiveness_aopc"]
        rows.append({
            "document": f"document {number}", "report": name, "label": document.label_name,
            "predicted": result.label_name(a.predicted_label), "tokens": len(result.tokens), "steps": a.n_steps,
            "completeness error": f"{a.relative_error:.2%}",
            "spearman, final": metrics.loc["final", "spearman_rho"], "spearman, all": metrics.loc["all", "spearman_rho"],
            "spearman, rollout": metrics.loc["rollout", "spearman_rho"],
            "AOPC attribution": aopc["attribution"], "AOPC attention (all layers)": aopc["attention (all)"],
            "AOPC rollout": aopc["rollout"], "AOPC random": aopc["random"],
            "flags": "; ".join(([] if a.converged else [f"NOT converged ({a.relative_error:.1%})"])
                               + ([f"truncated ({a.truncated_tokens:,} tokens dropped)"] if a.truncated_tokens else [])),
        })
        print(f"document {number}: {len(result.tokens)} tokens, label '{document.label_name}', predicted "
              f"'{result.label_name(a.predicted_label)}' (p = {result.probability:.3f})")
        print(f"  attribution: {a.n_steps} steps, {a.model_evaluations} model evaluations, completeness error "
              f"{a.relative_error:.2%}{'' if a.converged else f' (NOT converged: above the tolerance of {a.tol:.2%})'}; {seconds:.1f} s in all")
        print(f"  supporting the prediction (top-{k} by signed attribution): {_names(result.supporting(k))}")
        print(f"  opposing the prediction (bottom-{k} by signed attribution): {_names(result.opposing(k))}")
        print(f"  most attention received (all layers):                  {_names(result.top_attention('all', k))}")
        print(f"  spearman |attribution| vs attention (no special tokens): final {metrics.loc['final', 'spearman_rho']:.3f}, "
              f"all {metrics.loc['all', 'spearman_rho']:.3f}, rollout {metrics.loc['rollout', 'spearman_rho']:.3f}; "
              "comprehensiveness AOPC: " + ", ".join(f"{r} {v:.3f}" for r, v in aopc.items()) + "\n")
        failures += not a.converged

    index_report(os.path.join(out, "index.html"), pd.DataFrame(rows), title="pyattn demo",
                 notes=[f"Demo model: {model.config.num_hidden_layers} layers x {model.config.num_attention_heads} heads, "
                        f"windows {model.config.attention_window}. Spearman: attribution magnitude vs attention received "
                        "(mask no_special: special tokens dropped). AOPC: comprehensiveness, signed ranking (supporting tokens "
                        "removed first); higher = the model depends more on that ranking's top tokens."])

    # The compiled kernels against the readable pure-PyTorch reference (float64,
    # dense, written from the layout's rules) on the last document, every layer.
    collected = pyattn.attention(model, tokenizer, documents[-1].text, per_head=True)
    worst, rows_off = 0.0, 0.0
    for layer, (band, glob) in enumerate(zip(collected.attentions, collected.global_attentions)):
        dense = reference.band_to_dense(band, glob, collected.global_attention_mask)
        rows_off = max(rows_off, float((dense.sum(-1) - 1).abs().max()))
        expected = dense.sum(2)  # (B, H, N) column sums
        worst = max(worst, float((collected.received.per_layer[layer].double() - expected).abs().max()))
    ok = rows_off < 1e-4 and worst < 1e-4
    print(f"checks: rows of the reference dense attention sum to 1 (max |sum - 1| {rows_off:.1e}); "
          f"max |kernel - pure-PyTorch reference| over {len(collected.attentions)} layers: {worst:.1e}: {'ok' if ok else 'FAILED'}")
    print(f"reports: {os.path.abspath(os.path.join(out, 'index.html'))}")
    return 0 if ok else 1


# ------------------------------------------------- parameters -> flags
#: The one place that names flags for the library's parameters. Library
#: messages name a parameter as ``name=value`` (``name=True``, ``name=None``)
#: or as ```name```; :func:`_in_flags` prints them as the flag the user typed.
#: ``path`` is the data file to ``load_documents`` and the results folder to
#: ``ResultsStore``: told apart by the class of the error that names it.
PARAMETER_FLAGS: dict[str, str | dict[str, str]] = {
    "device": "--device",
    "layers": "--layers",
    "out": "--out",
    "path": {"DataError": "--data", "StoreError": "--out"},
    "name": "--model",
    "tokenizer_name": "--tokenizer",
    "trust_remote_code": "--trust-remote-code",
    "resume": "--resume",
    "force": "--force",
    "text_column": "--text-column",
    "label_column": "--label-column",
    "id_column": "--id-column",
    "memory_budget": "--memory-budget",
}


def _flag(name: str, error: BaseException) -> str | None:
    flag = PARAMETER_FLAGS.get(name)
    if isinstance(flag, dict):
        flag = next((flag[kind.__name__] for kind in type(error).__mro__ if kind.__name__ in flag), None)
    return flag


def _in_flags(error: BaseException) -> str:
    """``error``'s message with the parameters it names written as flags:
    ``device='gpu'`` -> ``--device 'gpu'``, ``resume=True`` -> ``--resume``,
    ``label_column=None`` -> ``--label-column ''``, ```out``` -> ``--out``.
    Names that are not parameters of the command are left as they are."""
    import re

    def assigned(match) -> str:
        flag = _flag(match.group(1), error)
        if flag is None:
            return match.group(0)
        return {"True": flag, "None": f"{flag} ''"}.get(match.group(2), f"{flag} ")

    text = re.sub(r"(?<![\w.-])([a-z_]+)=(True\b|None\b)?", assigned, str(error))
    return re.sub(r"`([a-z_]+)`", lambda match: _flag(match.group(1), error) or match.group(0), text)


# ------------------------------------------------------------ flag checks
class _Refused(Exception):
    """A refusal before any work: printed as one line, exit status 2."""


def _positive_int(flag: str, minimum: int = 1, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"{flag} must be {allowed}, got {value}")
        return value

    return parse


def _finite_float(flag: str, low: float, high: float | None = None, low_open: bool = True, high_open: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        left = value > low if low_open else value >= low
        right = high is None or (value < high if high_open else value <= high)
        if not math.isfinite(value) or not (left and right):
            interval = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}' + (')' if high_open else ']')}"
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number in {interval}, got {text}")
        return value

    return parse


def _steps(text: str):
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'--steps must be "auto" or a whole number of steps 1..{MAX_STEPS}, got {text!r}') from None
    if not 1 <= value <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f'--steps must be "auto" or a whole number of steps 1..{MAX_STEPS}, got {value}')
    return value


MAX_STEPS = 4096


def _memory_budget(text: str) -> int:
    from pyattn.attribution import parse_memory_budget

    try:
        return parse_memory_budget(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("memory_budget", str(PARAMETER_FLAGS["memory_budget"]), 1)) from None


def _device(text: str) -> str:
    from pyattn.pipeline import check_device

    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(_in_flags(error)) from None


def _fail(message: str, status: int = 2) -> int:
    print(f"pyattn: {message}", file=sys.stderr)
    return status


def _check_new_file(path: str, force: bool, suffixes: tuple[str, ...], flag: str = "--out") -> None:
    """Refuse, before any work, an output file pyattn cannot or may not write."""
    if not path.lower().endswith(suffixes):
        raise _Refused(f"{flag} {path!r} must end in {' or '.join(suffixes)}")
    if os.path.isdir(path):
        raise _Refused(f"{flag} {path!r} is a folder; give a file name")
    if os.path.basename(path).lower() in suffixes:
        raise _Refused(f"{flag} {path!r} has no name before {os.path.basename(path)!r}; give a name such as importance{suffixes[0]}")
    if os.path.exists(path) and not force:
        raise _Refused(f"{flag} {path} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _Refused(f"{flag} {path!r}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise _Refused(f"{flag} {path!r}: folder {parent} is not writable")


# ------------------------------------------------------------------ commands
def _check_model_limits(args, model, tokenizer) -> None:
    from pyattn.models.inputs import default_max_length

    classes = int(model.config.num_labels)
    if args.target is not None and args.target >= classes:
        raise _Refused(f"--target {args.target} does not exist: the model has {classes} classes, 0..{classes - 1}")
    if args.max_length is not None:
        limit = default_max_length(model, tokenizer)
        if args.max_length > limit:
            raise _Refused(f"--max-length {args.max_length} is over the model's limit of {limit} tokens")


def _check_tokenizer_fits(model, tokenizer, documents, data: str) -> None:
    """The tokenizer fits the model on these documents (ids inside the
    vocabulary, not mostly unknown), before any store is made."""
    from pyattn.models.inputs import check_tokenizer_fits

    texts = [d.text for d in documents if isinstance(d.text, str) and d.text.strip()]
    ids = [i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    try:
        check_tokenizer_fits(model, tokenizer, ids, where=f"the {len(texts)} document(s) of {data}")
    except ValueError as error:
        raise _Refused(str(error).replace("(pass the model's own tokenizer)", "(pass the model's own with --tokenizer)")) from None


def attribute_command(args: argparse.Namespace) -> int:
    import pyattn
    from pyattn.pipeline.documents import load_documents
    from pyattn.errors import DataError, Interrupted, ModelError, StoreError
    from pyattn.pipeline import label_names, load_model, plan_run, resolve_labels, run_attribution
    from pyattn.pipeline.store import ResultsStore

    if args.engine != "ray":
        used = [flag for flag, value in (("--address", args.address), ("--num-workers", args.num_workers), ("--gpus-per-worker", args.gpus_per_worker)) if value is not None]
        if used:
            return _fail(f"{', '.join(used)} only apply with --engine ray")
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
            raise _Refused(f"{args.data} holds no documents")
        model, tokenizer = load_model(args.model, args.tokenizer, args.trust_remote_code, args.device if args.engine == "local" else "cpu")
        _check_model_limits(args, model, tokenizer)
        _check_tokenizer_fits(model, tokenizer, documents, args.data)
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
    except (DataError, ModelError, StoreError, _Refused) as error:
        return _fail(_in_flags(error))
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
                return _fail(_in_flags(error))
            except RayRunError as error:
                return _fail(f"{_in_flags(error)}; finished documents are kept in {store.path}: fix it and run again with --resume", 1)
        else:
            summary = run_attribution(model, tokenizer, documents, store, kwargs, shard_size=args.shard_size, progress=not args.quiet,
                                      flush_seconds=args.flush_seconds, force=args.force, label_column=args.label_column)
    except Interrupted as stop:
        done = stop.summary.already_done + stop.summary.processed
        return _fail(f"interrupted: {done} of {stop.summary.total} documents are stored in {store.path}; "
                     "run the same command with --resume to continue", 130)
    except (DataError, ModelError, StoreError) as error:
        return _fail(f"{_in_flags(error)}; finished documents are kept in {store.path}", 1)
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


def _special_tokens(tokenizer_name: str) -> list[str]:
    import pyattn

    if tokenizer_name == "demo":
        return list(pyattn.load_demo()[1].all_special_tokens)
    from pyattn.pipeline import quiet_transformers

    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        special = list(AutoTokenizer.from_pretrained(tokenizer_name).all_special_tokens)
    except Exception as error:
        raise _Refused(f"cannot load the tokenizer {tokenizer_name!r} named in the store's manifest ({type(error).__name__}), "
                       "so special tokens cannot be told apart") from None
    if not special:
        raise _Refused(f"the tokenizer {tokenizer_name!r} named in the store's manifest declares no special tokens, "
                       "so the no_special mask cannot be computed")
    return special


def _store_and_importance(args):
    """The store, its (layers, heads) and a checked head importance."""
    from pyattn.attribution.importance import load_head_importance
    from pyattn.pipeline import store_shape
    from pyattn.pipeline.store import ResultsStore

    store = ResultsStore.open(args.results)
    shape = store_shape(store)
    if shape is None:
        raise _Refused(f"{store.path} holds no results yet: run `pyattn attribute` first")
    importance = None
    if args.head_importance:
        importance = load_head_importance(args.head_importance).numpy()
        if tuple(importance.shape) != tuple(shape):
            raise _Refused(f"--head-importance {args.head_importance} has shape {tuple(importance.shape)} "
                           f"but the store's model has {shape[0]} layers x {shape[1]} heads")
    return store, shape, importance


def compare_command(args: argparse.Namespace) -> int:
    from pyattn.errors import DataError, StoreError
    from pyattn.pipeline import compare_results, parse_layer_ranges

    try:
        store, shape, importance = _store_and_importance(args)
        ranges = parse_layer_ranges(args.layers, shape[0])
        special = _special_tokens(store.manifest().get("tokenizer", ""))
        per_document, summary, tokens = compare_results(store, importance, ranges, special_tokens=special, progress=not args.quiet,
                                                        significance=args.significance, head_map=args.head_map,
                                                        attribution_as=args.attribution_as)
    except (DataError, StoreError, ValueError, FileNotFoundError, _Refused) as error:
        return _fail(_in_flags(error))
    if not args.quiet:
        columns = ["attention", "mask", "documents", "spearman_rho_mean", "kendall_tau_mean", "cosine_minmax_mean", "jaccard_top_mean"]
        print(summary[[c for c in columns if c in summary.columns]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"\nwrote metrics.parquet{' (with p-values)' if args.significance else ''}, metrics_summary.csv, metrics_intervals.csv, "
              f"{'head_agreement.csv/.png, ' if args.head_map else ''}tokens.parquet, tokens.csv, tokens_intervals.csv to {store.path}")
    return 0


def importance_command(args: argparse.Namespace) -> int:
    import pyattn
    from pyattn.pipeline.documents import load_documents
    from pyattn.errors import DataError, ModelError
    from pyattn.pipeline import load_model, resolve_labels

    try:
        _check_new_file(args.out, args.force, (".pt", ".npy"))
        documents = [d for d in load_documents(args.data, args.text_column, args.label_column) if isinstance(d.text, str) and d.text.strip()]
        if args.limit:
            documents = documents[: args.limit]
        if not documents:
            raise _Refused(f"{args.data} holds no documents with text")
        missing = [d for d in documents if d.label is None]
        if missing:
            raise _Refused(f"head importance needs a label for every document: row {missing[0].index} (id {missing[0].doc_id!r}) has none "
                           f"in column {args.label_column!r}")
        model, tokenizer = load_model(args.model, args.tokenizer, args.trust_remote_code, args.device)
        _check_tokenizer_fits(model, tokenizer, documents, args.data)
        documents = resolve_labels(documents, model, args.label_column)
    except (DataError, ModelError, _Refused) as error:
        return _fail(_in_flags(error))
    compute = pyattn.taylor_importance if args.method == "taylor" else pyattn.head_gate_importance
    importance = compute(model, tokenizer, [d.text for d in documents], [d.label for d in documents], progress=not args.quiet)
    pyattn.save_head_importance(importance, args.out)
    if not args.quiet:
        print(f"{args.method} head importance of {len(documents)} documents, shape {tuple(importance.shape)} -> {args.out}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from pyattn.errors import DataError, StoreError
    from pyattn.pipeline import check_report_dir, report_results

    try:
        if args.out:
            check_report_dir(args.out)
        store, _, importance = _store_and_importance(args)
        check_report_dir(args.out or os.path.join(store.path, "reports"))
        manifest = store.manifest()
        labels = manifest.get("id2label")
        if labels is None and manifest.get("model") == "demo":
            from pyattn.demo import LABELS as labels
        index = report_results(store, args.out, importance, _special_tokens(manifest.get("tokenizer", "")), labels, progress=not args.quiet,
                               significance=args.significance, attribution_as=args.attribution_as,
                               head_importance_name=f"head importance from {os.path.basename(args.head_importance)}" if args.head_importance else "head importance")
    except (DataError, StoreError, ValueError, FileNotFoundError, _Refused) as error:
        return _fail(_in_flags(error))
    if not args.quiet:
        print(f"reports: {os.path.abspath(index)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with errors in one line (and where to read the usage)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyattn`` command: subcommands ``demo``,
    ``attribute``, ``compare``, ``importance`` and ``report``, each with its
    options checked as they are parsed (``args.run`` is the subcommand's
    function).

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> args = build_parser().parse_args(["attribute", "--model", "demo", "--data", "docs.csv", "--out", "results"])
    >>> args.command, args.model, args.data, args.out, args.run.__name__
    ('attribute', 'demo', 'docs.csv', 'results', 'attribute_command')
    """
    parser = _Parser(prog="pyattn", description="Attributions vs. attention for long-document classifiers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
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
    attribute_parser.add_argument("--steps", type=_steps, default="auto", help=f'integration steps 1..{MAX_STEPS}, or "auto" (default)')
    attribute_parser.add_argument("--tol", type=_finite_float("--tol", 0.0, 1.0), default=0.01,
                                  help="completeness tolerance for --steps auto, in (0, 1) (default 0.01)")
    attribute_parser.add_argument("--target", type=_positive_int("--target", 0), default=None, help="class to explain, from 0 (default: the predicted class)")
    attribute_parser.add_argument("--max-length", type=_positive_int("--max-length", 3), default=None, help="longest input in tokens, [CLS] and [SEP] included (at least 3)")
    attribute_parser.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 ... (default: the GPU when there is one)")
    attribute_parser.add_argument("--autocast", choices=["bfloat16", "float16"], default=None,
                                  help="run the model under torch.autocast in this dtype (faster on a GPU; the completeness error against "
                                       "the float32 model is stored too, as float32_relative_error); default: float32")
    attribute_parser.add_argument("--attention-route", choices=["auto", "qk", "eager"], default=None,
                                  help="how attention received is read: 'qk' from each layer's queries and keys while the model runs its own "
                                       "(sdpa) attention, never N x N; 'eager' from the model's attention probabilities (the reference); "
                                       "'auto' (default): 'qk' where the architecture allows, Longformer's band, else 'eager'")
    attribute_parser.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None, help="integration steps per forward pass, over all documents in it (default: as many as --memory-budget allows; given, it wins)")
    attribute_parser.add_argument("--memory-budget", type=_memory_budget, default=None,
                                  help='most memory the process may hold, e.g. 6GB or 500MB (default: min(6GB, held + half the available memory)); '
                                       'short documents share a batch within it')
    attribute_parser.add_argument("--shard-size", type=_positive_int("--shard-size"), default=4, help="documents per results shard at most (default 4)")
    attribute_parser.add_argument("--flush-seconds", type=_finite_float("--flush-seconds", 0.0), default=60.0,
                                  help="write finished documents at least this often, in seconds (default 60)")
    attribute_parser.add_argument("--limit", type=_positive_int("--limit"), default=None, help="only the first N documents")
    attribute_parser.add_argument("--resume", action="store_true", help="continue a run in an existing results store")
    attribute_parser.add_argument("--force", action="store_true", help="resume despite different settings, or use a non-empty --out")
    attribute_parser.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model's own code (off by default)")
    attribute_parser.add_argument("--engine", choices=["local", "ray"], default="local", help="local (one process, default) or ray")
    attribute_parser.add_argument("--address", default=None, help="with --engine ray: a cluster to join (default: start a local one)")
    attribute_parser.add_argument("--num-workers", type=_positive_int("--num-workers", 1, 1024), default=None,
                                  help="with --engine ray: workers, each loading the model once (default 2)")
    attribute_parser.add_argument("--gpus-per-worker", type=_finite_float("--gpus-per-worker", 0.0, low_open=False), default=None,
                                  help="with --engine ray: GPUs per worker (default 0)")
    attribute_parser.add_argument("--quiet", action="store_true")
    attribute_parser.add_argument("--verbose", action="store_true")
    attribute_parser.set_defaults(run=attribute_command)

    compare_parser = commands.add_parser("compare", help="similarity of attributions and attention over a results store")
    compare_parser.add_argument("--results", required=True, help="a results directory written by `pyattn attribute`")
    compare_parser.add_argument("--head-importance", help="(L, H) head importance (.pt or .npy) for the scaled choices")
    compare_parser.add_argument("--layers", help="layer ranges to compare too, numbered from 0 (-1 the last), inclusive, e.g. 0-5,6-11 or --layers=-3--1")
    compare_parser.add_argument("--significance", type=_positive_int("--significance", 0), default=0,
                                help="permutations for per-document p-values of every metric (circular-shift null; "
                                     "0, the default, skips them; 999 gives p down to 0.001)")
    compare_parser.add_argument("--attribution-as", choices=["magnitude", "signed"], default="magnitude",
                                help="attributions in every metric and p-value as |attribution| (magnitude, the default) or signed "
                                     "(a token that opposes the prediction ranks last); cosine_raw is always signed")
    compare_parser.add_argument("--head-map", action="store_true",
                                help="also the layer x head agreement map (head_agreement.csv/.png): permutation p-values "
                                     "with Holm correction; seconds per long document")
    compare_parser.add_argument("--quiet", action="store_true")
    compare_parser.set_defaults(run=compare_command)

    importance_parser = commands.add_parser("importance", help="head importance of a model over a labelled dataset")
    importance_parser.add_argument("--model", required=True, help="a model path or name, or 'demo'")
    importance_parser.add_argument("--tokenizer")
    importance_parser.add_argument("--data", required=True)
    importance_parser.add_argument("--out", required=True, help="where to save it: .pt or .npy")
    importance_parser.add_argument("--method", choices=["taylor", "head-gate"], default="taylor")
    importance_parser.add_argument("--text-column", default="text")
    importance_parser.add_argument("--label-column", default="label")
    importance_parser.add_argument("--limit", type=_positive_int("--limit"), default=None)
    importance_parser.add_argument("--device", type=_device, default=None)
    importance_parser.add_argument("--trust-remote-code", action="store_true")
    importance_parser.add_argument("--force", action="store_true", help="overwrite --out")
    importance_parser.add_argument("--quiet", action="store_true")
    importance_parser.set_defaults(run=importance_command)

    report_parser = commands.add_parser("report", help="HTML reports for a results store")
    report_parser.add_argument("--results", required=True)
    report_parser.add_argument("--out", default=None, help="where the reports go (default RESULTS/reports); a folder of other files is refused")
    report_parser.add_argument("--head-importance", help="(L, H) head importance to plot")
    report_parser.add_argument("--significance", type=_positive_int("--significance", 0), default=0,
                               help="permutations for each document's p-values, computed here (circular-shift null); "
                                    "0, the default, shows those of `pyattn compare --significance` when it ran")
    report_parser.add_argument("--attribution-as", choices=["magnitude", "signed"], default=None,
                               help="attributions in the metrics as |attribution| (magnitude) or signed; default: as `pyattn compare` "
                                    "took them, else magnitude")
    report_parser.add_argument("--quiet", action="store_true")
    report_parser.set_defaults(run=report_command)
    demo_parser = commands.add_parser("demo", help="the main job on the shipped demo model and documents")
    demo_parser.add_argument("--documents", type=_positive_int("--documents"), default=3, help="how many demo documents (default 3)")
    demo_parser.add_argument("--max-words", type=_positive_int("--max-words"), default=1200, help="take documents of at most this many words (default 1200)")
    demo_parser.add_argument("--top", type=_positive_int("--top"), default=8, help="tokens to list per ranking (default 8)")
    demo_parser.add_argument("--out", default="pyattn-demo", help="where the HTML reports go (default ./pyattn-demo)")
    demo_parser.add_argument("--force", action="store_true", help="write into an --out that holds other files")
    demo_parser.set_defaults(run=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    r"""The ``pyattn`` command. Refusals and failures are one line on stderr,
    never a traceback (``PYATTN_DEBUG=1`` shows it).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``pyattn`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 done, 1 a run that failed part-way (finished
        documents kept), 2 refused before any work, 130 interrupted (Ctrl-C).

    Examples
    --------
    >>> import contextlib, io
    >>> stderr = io.StringIO()
    >>> with contextlib.redirect_stderr(stderr):
    ...     status = main(["attribute", "--model", "demo", "--data", "no-such.csv", "--out", "results"])
    >>> status, stderr.getvalue()  # refused before loading anything
    (2, "pyattn: data file 'no-such.csv' does not exist\n")
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) else 2
    if args.command == "attribute":
        args.label_column = args.label_column or None
    from pyattn._malloc import return_freed_memory
    from pyattn._quiet import transformers_quiet

    return_freed_memory()  # this process is pyattn's: resident memory follows the tensors (pyattn/_malloc.py)
    try:
        with transformers_quiet():  # transformers' padding/loading messages are about pyattn's inputs, not the user's
            return args.run(args)
    except KeyboardInterrupt:
        print("pyattn: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except Exception as error:  # the last line of defence: one line, never a traceback
        if os.environ.get("PYATTN_DEBUG"):
            raise
        text = _in_flags(error).strip().splitlines()[0] if str(error).strip() else ""
        return _fail(f"{type(error).__name__}: {text[:300]} (set PYATTN_DEBUG=1 to see where)", 1)


if __name__ == "__main__":
    sys.exit(main())
