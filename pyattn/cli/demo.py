"""``pyattn demo``: the main job on the shipped demo model and documents
(:func:`pyattn.explain` per document, an HTML report each and an index page),
then a check of the compiled kernels against the pure-PyTorch dense
reference."""

from __future__ import annotations

import argparse
import os
import sys
import time

from pyattn.cli._flags import positive_int

__all__: list[str] = []  # the command line is its interface: `pyattn demo --help`

DEMO_MARKER = ".pyattn-demo"


def _names(table) -> str:
    return ", ".join(table["token"].tolist()) or "(none)"


def demo_command(args: argparse.Namespace) -> int:
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


def add_parser(commands) -> None:
    """The ``demo`` subcommand and its flags."""
    demo_parser = commands.add_parser("demo", help="the main job on the shipped demo model and documents")
    demo_parser.add_argument("--documents", type=positive_int("--documents"), default=3, help="how many demo documents (default 3)")
    demo_parser.add_argument("--max-words", type=positive_int("--max-words"), default=1200, help="take documents of at most this many words (default 1200)")
    demo_parser.add_argument("--top", type=positive_int("--top"), default=8, help="tokens to list per ranking (default 8)")
    demo_parser.add_argument("--out", default="pyattn-demo", help="where the HTML reports go (default ./pyattn-demo)")
    demo_parser.add_argument("--force", action="store_true", help="write into an --out that holds other files")
    demo_parser.set_defaults(run=demo_command)
