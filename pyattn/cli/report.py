"""``pyattn report``: an HTML report per document of a results store and an
index page."""

from __future__ import annotations

import argparse
import os

from pyattn.cli._checks import special_tokens, store_and_importance
from pyattn.cli._flags import Refused, fail, in_flags, positive_int

__all__: list[str] = []  # the command line is its interface: `pyattn report --help`


def report_command(args: argparse.Namespace) -> int:
    from pyattn.errors import DataError, StoreError
    from pyattn.pipeline import check_report_dir, report_results

    try:
        if args.out:
            check_report_dir(args.out)
        store, _, importance = store_and_importance(args)
        check_report_dir(args.out or os.path.join(store.path, "reports"))
        manifest = store.manifest()
        labels = manifest.get("id2label")
        if labels is None and manifest.get("model") == "demo":
            from pyattn.demo import LABELS as labels
        index = report_results(store, args.out, importance, special_tokens(manifest.get("tokenizer", "")), labels, progress=not args.quiet,
                               significance=args.significance, attribution_as=args.attribution_as,
                               head_importance_name=f"head importance from {os.path.basename(args.head_importance)}" if args.head_importance else "head importance")
    except (DataError, StoreError, ValueError, FileNotFoundError, Refused) as error:
        return fail(in_flags(error))
    if not args.quiet:
        print(f"reports: {os.path.abspath(index)}")
    return 0


def add_parser(commands) -> None:
    """The ``report`` subcommand and its flags."""
    report_parser = commands.add_parser("report", help="HTML reports for a results store")
    report_parser.add_argument("--results", required=True)
    report_parser.add_argument("--out", default=None, help="where the reports go (default RESULTS/reports); a folder of other files is refused")
    report_parser.add_argument("--head-importance", help="(L, H) head importance to plot")
    report_parser.add_argument("--significance", type=positive_int("--significance", 0), default=0,
                               help="permutations for each document's p-values, computed here (circular-shift null); "
                                    "0, the default, shows those of `pyattn compare --significance` when it ran")
    report_parser.add_argument("--attribution-as", choices=["magnitude", "signed"], default=None,
                               help="attributions in the metrics as |attribution| (magnitude) or signed; default: as `pyattn compare` "
                                    "took them, else magnitude")
    report_parser.add_argument("--quiet", action="store_true")
    report_parser.set_defaults(run=report_command)
