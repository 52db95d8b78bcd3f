"""The command line's one mapping from the library's parameters to its flags,
and the flag parsers every command shares.

The library names parameters (``device='gpu'``, ``resume=True``,
```out```); :func:`in_flags` prints them as the flags the user typed. Only
this package names flags (``tests/test_errors_module.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

# ------------------------------------------------- parameters -> flags
#: The one place that names flags for the library's parameters. Library
#: messages name a parameter as ``name=value`` (``name=True``, ``name=None``)
#: or as ```name```; :func:`in_flags` prints them as the flag the user typed.
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
    "route": "--attention-route",
    "attention_route": "--attention-route",
}


def _flag(name: str, error: BaseException) -> str | None:
    flag = PARAMETER_FLAGS.get(name)
    if isinstance(flag, dict):
        flag = next((flag[kind.__name__] for kind in type(error).__mro__ if kind.__name__ in flag), None)
    return flag


def in_flags(error: BaseException) -> str:
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


# ------------------------------------------------------------ flag parsers
class Refused(Exception):
    """A refusal before any work: printed as one line, exit status 2."""


def positive_int(flag: str, minimum: int = 1, maximum: int | None = None):
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


def finite_float(flag: str, low: float, high: float | None = None, low_open: bool = True, high_open: bool = True):
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


def steps(text: str):
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


def memory_budget(text: str) -> int:
    from pyattn.attribution import parse_memory_budget

    try:
        return parse_memory_budget(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("memory_budget", str(PARAMETER_FLAGS["memory_budget"]), 1)) from None


def device(text: str) -> str:
    from pyattn.pipeline import check_device

    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(in_flags(error)) from None


def fail(message: str, status: int = 2) -> int:
    print(f"pyattn: {message}", file=sys.stderr)
    return status


def check_new_file(path: str, force: bool, suffixes: tuple[str, ...], flag: str = "--out") -> None:
    """Refuse, before any work, an output file pyattn cannot or may not write."""
    if not path.lower().endswith(suffixes):
        raise Refused(f"{flag} {path!r} must end in {' or '.join(suffixes)}")
    if os.path.isdir(path):
        raise Refused(f"{flag} {path!r} is a folder; give a file name")
    if os.path.basename(path).lower() in suffixes:
        raise Refused(f"{flag} {path!r} has no name before {os.path.basename(path)!r}; give a name such as importance{suffixes[0]}")
    if os.path.exists(path) and not force:
        raise Refused(f"{flag} {path} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise Refused(f"{flag} {path!r}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise Refused(f"{flag} {path!r}: folder {parent} is not writable")


class Parser(argparse.ArgumentParser):
    """argparse, with errors in one line (and where to read the usage)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)
