"""``pyattn compare``: the similarity of attributions and attention over a
results store, with token tables, intervals and optional p-values."""

from __future__ import annotations

import argparse

from pyattn.cli._checks import special_tokens, store_and_importance
from pyattn.cli._flags import Refused, fail, in_flags, positive_int

__all__: list[str] = []  # the command line is its interface: `pyattn compare --help`


def compare_command(args: argparse.Namespace) -> int:
    from pyattn.errors import DataError, StoreError
    from pyattn.pipeline import compare_results, parse_layer_ranges

    try:
        store, shape, importance = store_and_importance(args)
        ranges = parse_layer_ranges(args.layers, shape[0])
        special = special_tokens(store.manifest().get("tokenizer", ""))
        per_document, summary, tokens = compare_results(store, importance, ranges, special_tokens=special, progress=not args.quiet,
                                                        significance=args.significance, head_map=args.head_map,
                                                        attribution_as=args.attribution_as)
    except (DataError, StoreError, ValueError, FileNotFoundError, Refused) as error:
        return fail(in_flags(error))
    if not args.quiet:
        columns = ["attention", "mask", "documents", "spearman_rho_mean", "kendall_tau_mean", "cosine_minmax_mean", "jaccard_top_mean"]
        print(summary[[c for c in columns if c in summary.columns]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"\nwrote metrics.parquet{' (with p-values)' if args.significance else ''}, metrics_summary.csv, metrics_intervals.csv, "
              f"{'head_agreement.csv/.png, ' if args.head_map else ''}tokens.parquet, tokens.csv, tokens_intervals.csv to {store.path}")
    return 0


def add_parser(commands) -> None:
    """The ``compare`` subcommand and its flags."""
    compare_parser = commands.add_parser("compare", help="similarity of attributions and attention over a results store")
    compare_parser.add_argument("--results", required=True, help="a results directory written by `pyattn attribute`")
    compare_parser.add_argument("--head-importance", help="(L, H) head importance (.pt or .npy) for the scaled choices")
    compare_parser.add_argument("--layers", help="layer ranges to compare too, numbered from 0 (-1 the last), inclusive, e.g. 0-5,6-11 or --layers=-3--1")
    compare_parser.add_argument("--significance", type=positive_int("--significance", 0), default=0,
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
