"""The ``pyattn`` command.

``pyattn demo`` runs the main job on the shipped default, the demo model and
demo documents: for each document its prediction, token attributions (Layer
Integrated Gradients, steps chosen for 1% completeness), attention received
(final layer, all layers, head-importance scaled, rollout), similarity and
faithfulness, an HTML report per document and an index page (all through
:func:`pyattn.explain`); and a check of the kernels against the pure-PyTorch
dense reference.

``pyattn attribute`` runs attribution over a dataset file into a resumable
results store (:mod:`pyattn.store`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


DEMO_MARKER = ".pyattn-demo"


def _names(table) -> str:
    return ", ".join(table["token"].tolist()) or "(none)"


def demo(args: argparse.Namespace) -> int:
    """The main job on the shipped demo model: :func:`pyattn.explain` per
    document, an HTML report each and an index page; then a check of the
    compiled kernels against the pure-PyTorch dense reference."""
    import pandas as pd

    import pyattn
    from pyattn import reference
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
            "AOPC attribution": aopc["attribution"], "AOPC attention": aopc["attention (all)"],
            "AOPC rollout": aopc["rollout"], "AOPC random": aopc["random"],
        })
        print(f"document {number}: {len(result.tokens)} tokens, label '{document.label_name}', predicted "
              f"'{result.label_name(a.predicted_label)}' (p = {result.probability:.3f})")
        print(f"  attribution: {a.n_steps} steps, {a.model_evaluations} model evaluations, completeness error "
              f"{a.relative_error:.2%}{'' if a.converged else ' (NOT converged: step cap reached)'}; {seconds:.1f} s in all")
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


def _load_model(name: str, tokenizer_name: str | None, trust_remote_code: bool, device: str | None):
    from pyattn.dataset import DataError, load_model

    try:
        return load_model(name, tokenizer_name, trust_remote_code, device)
    except DataError as error:
        raise SystemExit(f"pyattn: {error}")


def attribute_command(args: argparse.Namespace) -> int:
    import pyattn
    from pyattn.dataset import DataError, load_documents, run_attribution
    from pyattn.store import ResultsStore, StoreError

    steps = args.steps if args.steps == "auto" else int(args.steps)
    settings = {
        "n_steps": steps,
        "target": args.target,
        "max_length": args.max_length,
        "tol": args.tol,
        "text_column": args.text_column,
        "label_column": args.label_column,
        "id_column": args.id_column,
        "data": os.path.abspath(args.data) if os.path.exists(args.data) else args.data,
    }
    try:
        documents = load_documents(args.data, args.text_column, args.label_column, args.id_column)
        if args.limit:
            documents = documents[: args.limit]
        manifest = {
            "model": args.model,
            "tokenizer": args.tokenizer or args.model,
            "settings": settings,
            "pyattn_version": pyattn.__version__,
            "command": "attribute",
        }
        store = ResultsStore.create(args.out, manifest, resume=args.resume, force=args.force)
    except (DataError, StoreError) as error:
        print(f"pyattn: {error}", file=sys.stderr)
        return 2
    kwargs = {"n_steps": steps, "target": args.target, "max_length": args.max_length, "tol": args.tol,
              "internal_batch_size": args.batch_size, "device": args.device}
    try:
        if args.engine == "ray":
            from pyattn.ray_engine import RayUnavailable, run_attribution_ray

            try:
                summary = run_attribution_ray(
                    args.model, documents, store, kwargs, tokenizer=args.tokenizer, trust_remote_code=args.trust_remote_code,
                    device=args.device, address=args.address, num_workers=args.num_workers,
                    gpus_per_worker=args.gpus_per_worker, shard_size=args.shard_size, progress=not args.quiet,
                )
            except RayUnavailable as error:
                print(f"pyattn: {error}", file=sys.stderr)
                return 2
        else:
            model, tokenizer = _load_model(args.model, args.tokenizer, args.trust_remote_code, args.device)
            summary = run_attribution(model, tokenizer, documents, store, kwargs, shard_size=args.shard_size, progress=not args.quiet)
    except (DataError, StoreError) as error:
        print(f"pyattn: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"{summary.processed} documents attributed in {summary.seconds:.1f} s "
              f"({summary.already_done} already done, {len(summary.skipped)} skipped) -> {store.path}")
        if summary.not_converged:
            print(f"{summary.not_converged} documents did not reach the completeness tolerance within the step cap")
        for entry in summary.skipped[: 20 if not args.verbose else None]:
            print(f"  skipped {entry['doc_id']} (row {entry['index']}): {entry['reason']}")
    return 0


def _special_tokens(tokenizer_name: str) -> list[str]:
    import pyattn

    if tokenizer_name == "demo":
        return list(pyattn.load_demo()[1].all_special_tokens)
    from transformers import AutoTokenizer

    try:
        special = list(AutoTokenizer.from_pretrained(tokenizer_name).all_special_tokens)
    except (OSError, ValueError) as error:
        # Never fall back to "no special tokens": the no_special mask would then keep them.
        raise SystemExit(f"pyattn: cannot load the tokenizer {tokenizer_name!r} that the store was made with, so its special "
                         f"tokens are unknown ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                         "make it available at that path and run again")
    if not special:
        raise SystemExit(f"pyattn: the tokenizer {tokenizer_name!r} declares no special tokens: the no_special mask "
                         "cannot be computed")
    return special


def _ranges(text: str | None) -> list[tuple[int, int]]:
    ranges = []
    for part in (text or "").split(","):
        if part.strip():
            first, _, last = part.partition("-")
            ranges.append((int(first), int(last or first)))
    return ranges


def compare_command(args: argparse.Namespace) -> int:
    from pyattn.dataset import DataError, compare_results
    from pyattn.importance import load_head_importance
    from pyattn.store import ResultsStore, StoreError

    try:
        store = ResultsStore.open(args.results)
        importance = load_head_importance(args.head_importance) if args.head_importance else None
        special = _special_tokens(store.manifest().get("tokenizer", ""))
        per_document, summary, tokens = compare_results(store, importance, _ranges(args.layers), special_tokens=special, progress=not args.quiet)
    except (DataError, StoreError, ValueError, FileNotFoundError) as error:
        print(f"pyattn: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        columns = ["attention", "mask", "documents", "spearman_rho_mean", "kendall_tau_mean", "cosine_minmax_mean", "jaccard_top_mean"]
        print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"\nwrote metrics.parquet, metrics_summary.csv, tokens.parquet, tokens.csv to {store.path}")
    return 0


def importance_command(args: argparse.Namespace) -> int:
    import pyattn
    from pyattn.dataset import DataError, load_documents

    if os.path.exists(args.out) and not args.force:
        print(f"pyattn: {args.out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    try:
        documents = [d for d in load_documents(args.data, args.text_column, args.label_column) if isinstance(d.text, str) and d.text.strip()]
        if args.limit:
            documents = documents[: args.limit]
        if any(d.label is None for d in documents):
            raise DataError("head importance needs a label for every document (--label-column)")
    except DataError as error:
        print(f"pyattn: {error}", file=sys.stderr)
        return 2
    model, tokenizer = _load_model(args.model, args.tokenizer, args.trust_remote_code, args.device)
    compute = pyattn.taylor_importance if args.method == "taylor" else pyattn.head_gate_importance
    importance = compute(model, tokenizer, [d.text for d in documents], [d.label for d in documents], progress=not args.quiet)
    pyattn.save_head_importance(importance, args.out)
    if not args.quiet:
        print(f"{args.method} head importance of {len(documents)} documents, shape {tuple(importance.shape)} -> {args.out}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from pyattn.dataset import DataError, report_results
    from pyattn.importance import load_head_importance
    from pyattn.store import ResultsStore, StoreError

    try:
        store = ResultsStore.open(args.results)
        importance = load_head_importance(args.head_importance).numpy() if args.head_importance else None
        manifest = store.manifest()
        labels = None
        if manifest.get("model") == "demo":
            from pyattn.demo import LABELS as labels
        index = report_results(store, args.out, importance, _special_tokens(manifest.get("tokenizer", "")), labels, progress=not args.quiet)
    except (DataError, StoreError, ValueError, FileNotFoundError) as error:
        print(f"pyattn: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"reports: {os.path.abspath(index)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyattn", description="Attributions vs. attention for long-document classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    attribute_parser = commands.add_parser("attribute", help="attribute every document of a dataset into a resumable results store")
    attribute_parser.add_argument("--model", required=True, help="a model path or name, or 'demo' for the shipped demo model")
    attribute_parser.add_argument("--tokenizer", help="tokenizer path or name (default: the model's)")
    attribute_parser.add_argument("--data", required=True, help="CSV, JSONL or Parquet file, or a Hugging Face dataset name:split")
    attribute_parser.add_argument("--out", required=True, help="results directory (created; an existing store needs --resume)")
    attribute_parser.add_argument("--text-column", default="text")
    attribute_parser.add_argument("--label-column", default="label", help="label column ('' for none)")
    attribute_parser.add_argument("--id-column", default=None, help="unique document ids (default: row numbers)")
    attribute_parser.add_argument("--steps", default="auto", help='integration steps, or "auto" (default)')
    attribute_parser.add_argument("--tol", type=float, default=0.01, help="completeness tolerance for --steps auto (default 0.01)")
    attribute_parser.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted class)")
    attribute_parser.add_argument("--max-length", type=int, default=None)
    attribute_parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU when there is one)")
    attribute_parser.add_argument("--batch-size", type=int, default=None, help="steps per forward pass (default: fitted to free memory)")
    attribute_parser.add_argument("--shard-size", type=int, default=4, help="documents per results shard (default 4)")
    attribute_parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    attribute_parser.add_argument("--resume", action="store_true", help="continue a run in an existing results store")
    attribute_parser.add_argument("--force", action="store_true", help="resume despite different settings, or use a non-empty --out")
    attribute_parser.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model's own code (off by default)")
    attribute_parser.add_argument("--engine", choices=["local", "ray"], default="local", help="local (one process, default) or ray")
    attribute_parser.add_argument("--address", default=None, help="with --engine ray: a cluster to join (default: start a local one)")
    attribute_parser.add_argument("--num-workers", type=int, default=2, help="with --engine ray: workers, each loading the model once (default 2)")
    attribute_parser.add_argument("--gpus-per-worker", type=float, default=0, help="with --engine ray: GPUs per worker (default 0)")
    attribute_parser.add_argument("--quiet", action="store_true")
    attribute_parser.add_argument("--verbose", action="store_true")
    attribute_parser.set_defaults(run=attribute_command)

    compare_parser = commands.add_parser("compare", help="similarity of attributions and attention over a results store")
    compare_parser.add_argument("--results", required=True, help="a results directory written by `pyattn attribute`")
    compare_parser.add_argument("--head-importance", help="(L, H) head importance (.pt or .npy) for the scaled choices")
    compare_parser.add_argument("--layers", help="layer ranges to compare too, numbered from 0 and inclusive, e.g. 0-5,6-11")
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
    importance_parser.add_argument("--limit", type=int, default=None)
    importance_parser.add_argument("--device", default=None)
    importance_parser.add_argument("--trust-remote-code", action="store_true")
    importance_parser.add_argument("--force", action="store_true", help="overwrite --out")
    importance_parser.add_argument("--quiet", action="store_true")
    importance_parser.set_defaults(run=importance_command)

    report_parser = commands.add_parser("report", help="HTML reports for a results store")
    report_parser.add_argument("--results", required=True)
    report_parser.add_argument("--out", default=None, help="where the reports go (default RESULTS/reports)")
    report_parser.add_argument("--head-importance", help="(L, H) head importance to plot")
    report_parser.add_argument("--quiet", action="store_true")
    report_parser.set_defaults(run=report_command)
    demo_parser = commands.add_parser("demo", help="the main job on the shipped demo model and documents")
    demo_parser.add_argument("--documents", type=int, default=3, help="how many demo documents (default 3)")
    demo_parser.add_argument("--max-words", type=int, default=1200, help="take documents of at most this many words (default 1200)")
    demo_parser.add_argument("--top", type=int, default=8, help="tokens to list per ranking (default 8)")
    demo_parser.add_argument("--out", default="pyattn-demo", help="where the HTML reports go (default ./pyattn-demo)")
    demo_parser.add_argument("--force", action="store_true", help="write into an --out that holds other files")
    demo_parser.set_defaults(run=demo)
    args = parser.parse_args(argv)
    if args.command == "attribute":
        args.label_column = args.label_column or None
        if args.steps != "auto" and not args.steps.isdigit():
            parser.error(f'--steps must be "auto" or a positive integer, got {args.steps!r}')
    if args.command == "demo" and args.documents < 1:
        parser.error(f"--documents must be at least 1, got {args.documents}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
