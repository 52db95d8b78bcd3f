"""The `pyattn demo` command on the shipped default."""

from __future__ import annotations

import subprocess
import sys

from pyattn.cli import main


def test_demo_runs_the_main_job(capsys):
    assert main(["demo", "--documents", "1", "--max-words", "300", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "document 1:" in out and "top-5 by attribution:" in out and "top-5 by attention (final):" in out
    assert "rows of the dense attention sum to 1: ok" in out


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "pyattn.cli", "demo", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--documents" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "pyattn.cli", "demo", "--documents", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--documents must be at least 1" in bad.stderr
