"""The ``pyattn`` command: one module per subcommand.

- ``pyattn demo`` (:mod:`pyattn.cli.demo`) runs the main job on the shipped
  demo model and demo documents: for each document its prediction, token
  attributions (Layer Integrated Gradients, steps chosen for 1% completeness),
  attention received (final layer, all layers, head-importance scaled,
  rollout), similarity and faithfulness, an HTML report per document and an
  index page (all through :func:`pyattn.explain`); and a check of the kernels
  against the pure-PyTorch dense reference.
- ``pyattn attribute`` (:mod:`pyattn.cli.attribute`) runs attribution over a
  dataset file into a resumable results store (:mod:`pyattn.pipeline.store`).
- ``pyattn compare``, ``pyattn importance`` and ``pyattn report``
  (:mod:`pyattn.cli.compare`, :mod:`pyattn.cli.importance`,
  :mod:`pyattn.cli.report`) read that store.

The library's messages name parameters; the one mapping from parameters to
flags is ``pyattn/cli/_flags.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from pyattn.cli import attribute, compare, demo, importance, report
from pyattn.cli._flags import Parser, fail, in_flags

__all__ = ["build_parser", "main"]

#: The subcommands in the order ``pyattn --help`` lists them.
COMMANDS = (attribute, compare, importance, report, demo)


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
    parser = Parser(prog="pyattn", description="Attributions vs. attention for long-document classifiers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(commands)
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
        text = in_flags(error).strip().splitlines()[0] if str(error).strip() else ""
        return fail(f"{type(error).__name__}: {text[:300]} (set PYATTN_DEBUG=1 to see where)", 1)
