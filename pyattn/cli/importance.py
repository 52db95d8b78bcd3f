"""``pyattn importance``: head importance (Taylor or head gates) of a model over
a labelled dataset, saved as .pt or .npy."""

from __future__ import annotations

import argparse

from pyattn.cli._checks import check_tokenizer_fits
from pyattn.cli._flags import Refused, check_new_file, device, fail, in_flags, positive_int

__all__: list[str] = []  # the command line is its interface: `pyattn importance --help`


def importance_command(args: argparse.Namespace) -> int:
    import pyattn
    from pyattn.pipeline.documents import load_documents
    from pyattn.errors import DataError, ModelError
    from pyattn.pipeline import load_model, resolve_labels

    try:
        check_new_file(args.out, args.force, (".pt", ".npy"))
        documents = [d for d in load_documents(args.data, args.text_column, args.label_column) if isinstance(d.text, str) and d.text.strip()]
        if args.limit:
            documents = documents[: args.limit]
        if not documents:
            raise Refused(f"{args.data} holds no documents with text")
        missing = [d for d in documents if d.label is None]
        if missing:
            raise Refused(f"head importance needs a label for every document: row {missing[0].index} (id {missing[0].doc_id!r}) has none "
                           f"in column {args.label_column!r}")
        model, tokenizer = load_model(args.model, args.tokenizer, args.trust_remote_code, args.device)
        check_tokenizer_fits(model, tokenizer, documents, args.data)
        documents = resolve_labels(documents, model, args.label_column)
    except (DataError, ModelError, Refused) as error:
        return fail(in_flags(error))
    compute = pyattn.taylor_importance if args.method == "taylor" else pyattn.head_gate_importance
    importance = compute(model, tokenizer, [d.text for d in documents], [d.label for d in documents], progress=not args.quiet)
    pyattn.save_head_importance(importance, args.out)
    if not args.quiet:
        print(f"{args.method} head importance of {len(documents)} documents, shape {tuple(importance.shape)} -> {args.out}")
    return 0


def add_parser(commands) -> None:
    """The ``importance`` subcommand and its flags."""
    importance_parser = commands.add_parser("importance", help="head importance of a model over a labelled dataset")
    importance_parser.add_argument("--model", required=True, help="a model path or name, or 'demo'")
    importance_parser.add_argument("--tokenizer")
    importance_parser.add_argument("--data", required=True)
    importance_parser.add_argument("--out", required=True, help="where to save it: .pt or .npy")
    importance_parser.add_argument("--method", choices=["taylor", "head-gate"], default="taylor")
    importance_parser.add_argument("--text-column", default="text")
    importance_parser.add_argument("--label-column", default="label")
    importance_parser.add_argument("--limit", type=positive_int("--limit"), default=None)
    importance_parser.add_argument("--device", type=device, default=None)
    importance_parser.add_argument("--trust-remote-code", action="store_true")
    importance_parser.add_argument("--force", action="store_true", help="overwrite --out")
    importance_parser.add_argument("--quiet", action="store_true")
    importance_parser.set_defaults(run=importance_command)
