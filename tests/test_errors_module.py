"""pyattn.errors: one family of exceptions, each still the builtin it replaced;
library messages name parameters and only the CLI names flags; the modules
renamed in 1.1 keep their old import paths for one release, with a warning."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import warnings

import pytest

import pyattn
import pyattn.errors as errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pyattn")


# ------------------------------------------------------------ the family
BUILTIN_OF = {
    "InputError": ValueError,
    "ModelError": ValueError,
    "NotADistribution": ValueError,
    "MissingSpecialTokens": ValueError,
    "DataError": ValueError,
    "StoreError": RuntimeError,
    "StoreBusy": RuntimeError,
    "DenseTooLarge": MemoryError,
    "RayUnavailable": ImportError,
    "RayRunError": RuntimeError,
}


@pytest.mark.parametrize("name", sorted(BUILTIN_OF))
def test_each_error_is_a_pyattn_error_and_still_its_builtin(name):
    kind = getattr(errors, name)
    assert issubclass(kind, errors.PyattnError)
    assert issubclass(kind, BUILTIN_OF[name]), f"`except {BUILTIN_OF[name].__name__}` written before 1.1 must still catch {name}"
    with pytest.raises(BUILTIN_OF[name]):
        raise kind("x")


def test_the_table_covers_the_module():
    assert set(errors.__all__) == set(BUILTIN_OF) | {"PyattnError", "Interrupted"}


def test_model_and_data_errors_are_siblings():
    assert not issubclass(errors.ModelError, errors.DataError)
    assert not issubclass(errors.DataError, errors.ModelError)
    with pytest.raises(errors.ModelError):
        try:
            raise errors.ModelError("a model")
        except errors.DataError:  # must not catch it
            pytest.fail("except DataError caught a ModelError")


def test_interrupted_is_a_ctrl_c_that_except_exception_does_not_swallow():
    assert issubclass(errors.Interrupted, KeyboardInterrupt)
    assert not issubclass(errors.Interrupted, Exception)
    with pytest.raises(KeyboardInterrupt):
        try:
            raise errors.Interrupted(summary=None)
        except Exception:
            pytest.fail("except Exception swallowed a Ctrl-C")


@pytest.mark.parametrize("module,name", [
    ("pyattn.pipeline.documents", "DataError"), ("pyattn.pipeline", "ModelError"), ("pyattn.pipeline", "Interrupted"),
    ("pyattn.pipeline.store", "StoreError"), ("pyattn.pipeline.store", "StoreBusy"), ("pyattn.kernels.layers", "DenseTooLarge"),
    ("pyattn.model_attention", "NotADistribution"), ("pyattn.compare.similarity", "MissingSpecialTokens"),
    ("pyattn.pipeline.ray_engine", "RayUnavailable"), ("pyattn.pipeline.ray_engine", "RayRunError"), ("pyattn", "DenseTooLarge"),
])
def test_old_homes_give_the_same_class(module, name):
    import importlib

    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


# ---------------------------------------- raised for real, naming parameters
def test_a_bad_device_names_the_parameter():
    from pyattn._checks import resolve_device
    from pyattn.pipeline import check_device

    assert check_device is pyattn._checks.check_device  # one device validator, in the base layer
    with pytest.raises(errors.InputError, match=r"^device='gpu' is not a device"):
        resolve_device("gpu")
    with pytest.raises(errors.InputError, match=r"^device='gpu' is not a device: use cpu, cuda, cuda:N or mps$"):
        check_device("gpu")


def test_a_bad_layer_range_names_the_parameter():
    from pyattn.pipeline import parse_layer_ranges

    assert parse_layer_ranges("0,-1", 2) == [(0, 0), (1, 1)]
    with pytest.raises(errors.InputError, match=r"^layers='7-3': layer 7 does not exist; the model has 2 layers"):
        parse_layer_ranges("0,7-3", 2)


def test_a_folder_given_as_data_is_a_data_error_naming_path(tmp_path):
    from pyattn.pipeline.documents import load_documents

    with pytest.raises(errors.DataError, match=r"^path='.*' is a folder; give a .csv, .jsonl or .parquet file$"):
        load_documents(str(tmp_path))


def test_a_file_given_as_store_is_a_store_error_naming_path(tmp_path):
    from pyattn.pipeline.store import ResultsStore

    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(errors.StoreError, match=r"^path='.*notes.txt' is a file, not a directory$"):
        ResultsStore.check_target(str(target))


def test_a_missing_model_folder_is_a_model_error_not_a_data_error():
    from pyattn.pipeline import load_model

    with pytest.raises(errors.ModelError, match="model folder 'no/such-folder' does not exist") as caught:
        load_model("no/such-folder")
    assert not isinstance(caught.value, errors.DataError)


def _raised_strings(path: str):
    """(line, text) of every string literal in a ``raise`` statement of ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for part in ast.walk(node.exc):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    yield node.lineno, part.value


def _library_files():
    for base, _, names in os.walk(PACKAGE):
        for name in names:
            path = os.path.join(base, name)
            relative = os.path.relpath(path, ROOT)
            # the two command lines: pyattn's own, and the demo's training script
            if name.endswith(".py") and not relative.startswith(os.path.join("pyattn", "cli", "")) and relative != os.path.join("pyattn", "demo", "train.py"):
                yield relative, path


def test_no_library_message_names_a_flag():
    flags = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    found = [f"{relative}:{line}: {text!r}" for relative, path in _library_files() for line, text in _raised_strings(path)
             if flags.search(text)]
    assert len(list(_library_files())) > 20
    assert not found, "library messages name parameters (device=..., resume=True); only pyattn/cli/ names flags:\n" + "\n".join(found)


# ------------------------------------------------------ the CLI's one mapping
def test_every_mapped_flag_is_a_flag_of_the_command():
    from pyattn.cli import build_parser
    from pyattn.cli._flags import PARAMETER_FLAGS

    parser = build_parser()
    commands = next(action for action in parser._actions if action.choices and isinstance(action.choices, dict)).choices
    options = {option for sub in commands.values() for action in sub._actions for option in action.option_strings}
    mapped = {flag for value in PARAMETER_FLAGS.values() for flag in (value.values() if isinstance(value, dict) else [value])}
    assert not mapped - options, f"mapped to flags no command has: {mapped - options}"


@pytest.mark.parametrize("error,printed", [
    (errors.InputError("device='gpu' is not a device"), "--device 'gpu' is not a device"),
    (errors.StoreError("path='/x' already holds results: pass resume=True, or choose a new `path`"),
     "--out '/x' already holds results: pass --resume, or choose a new --out"),
    (errors.DataError("path='d' is a folder (set `text_column`); pass label_column=None"),
     "--data 'd' is a folder (set --text-column); pass --label-column ''"),
    (errors.ModelError("tokenizer_name='t' cannot be used with name='demo'; drop `tokenizer_name`"),
     "--tokenizer 't' cannot be used with --model 'demo'; drop --tokenizer"),
    # not parameters of the command: left alone
    (errors.InputError("masks need the tokens: pass tokens=; run `pyattn compare`; --device=cpu"),
     "masks need the tokens: pass tokens=; run `pyattn compare`; --device=cpu"),
])
def test_the_cli_prints_flags_where_the_library_names_parameters(error, printed):
    from pyattn.cli._flags import in_flags

    assert in_flags(error) == printed


def test_the_cli_names_the_flag_for_a_library_refusal(capsys, tmp_path):
    from pyattn.cli import main

    assert main(["attribute", "--model", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"pyattn: --data {str(tmp_path)!r} is a folder; give a .csv, .jsonl or .parquet file\n"


def test_no_bare_value_errors():
    """Every value refusal is in the family (pyattn.errors' promise):
    argument checks raise InputError, model refusals ModelError (both still
    ValueErrors); no bare ``raise ValueError`` is left in the library."""
    count = sum(open(path, encoding="utf-8").read().count("raise ValueError(") for _, path in _library_files())
    assert count == 0, f"{count} bare `raise ValueError(` in pyattn: raise a pyattn.errors class (InputError for an argument)"


# ----------------------------------------------- modules moved in 1.1
from pyattn._compat import MOVED  # noqa: E402

# The three whose old path is also a function of the package.
RENAMED = [("explain", "explanation", "compose"), ("attention", "model_attention", "attention_route"),
           ("single_pass", "attribution.single_pass", "band_gradient")]


def _a_public_name(module: str) -> str:
    import importlib

    target = importlib.import_module(f"pyattn.{module}")
    names = list(getattr(target, "__all__", None) or [n for n in vars(target) if not n.startswith("_")])
    assert names, f"pyattn.{module} has no public name"
    return names[0]


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_module_path_works_and_warns(old, new):
    import importlib

    name = dict((o, n) for o, _, n in RENAMED).get(old) or _a_public_name(new)
    with pytest.warns(DeprecationWarning, match=rf"the module pyattn\.{old} is now pyattn\.{new}"):
        namespace: dict = {}
        exec(f"from pyattn.{old} import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(f"pyattn.{new}"), name)
    if old in {o for o, _, _ in RENAMED}:
        return  # `import pyattn.explain as m` binds the package attribute: the function (test below)
    with pytest.warns(DeprecationWarning, match=rf"pyattn\.{old} is now pyattn\.{new}"):
        namespace = {}
        exec(f"import pyattn.{old} as m; value = m.{name}", namespace)
    assert namespace["value"] is getattr(importlib.import_module(f"pyattn.{new}"), name)


def test_moved_paths_are_not_real_modules_any_more():
    import importlib.util

    for old in MOVED:
        path = os.path.join(ROOT, "pyattn", *old.split("."))
        assert not os.path.exists(path + ".py") and not os.path.isdir(path), f"pyattn/{old} still exists beside its forwarding module"
    assert importlib.util.find_spec("pyattn._compat") is not None


def test_the_package_attribute_of_a_moved_module_forwards():
    for old in sorted(set(MOVED) - {o for o, _, _ in RENAMED}):
        assert getattr(pyattn, old) is sys.modules[f"pyattn.{old}"], old
    with pytest.raises(AttributeError, match="no attribute 'no_such_module'"):
        pyattn.no_such_module


@pytest.mark.parametrize("old,new,name", RENAMED)
def test_the_package_attribute_stays_the_function(old, new, name):
    function = getattr(pyattn, old)
    assert callable(function) and f"{function.__module__}.".startswith(f"pyattn.{new}.") and function.__name__ == old
    import importlib

    assert getattr(importlib.import_module(f"pyattn.{new}"), old) is function
    assert sys.modules[f"pyattn.{old}"] is not function  # the old dotted name is the forwarding module


@pytest.mark.parametrize("code", [
    "import pyattn",
    "import pyattn.explanation, pyattn.model_attention, pyattn.attribution.single_pass, pyattn.errors, pyattn.runner, pyattn.cli",
    "from pyattn.explanation import compose; from pyattn.model_attention import attention_route; "
    "from pyattn.attribution.single_pass import band_gradient",
])
def test_new_paths_import_without_warnings(code):
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Warning" not in result.stderr, result.stderr


def test_the_forwarding_module_is_quiet_to_tools_that_probe_dunders():
    shim = sys.modules["pyattn.explain"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(shim, "__file__", None) is None and getattr(shim, "__path__", None) is None
