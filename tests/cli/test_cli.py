"""The `pyattn demo` command on the shipped default."""

from __future__ import annotations

import subprocess
import sys

from pyattn.cli import main


def test_demo_runs_the_main_job(capsys, tmp_path):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--documents", "2", "--max-words", "300", "--top", "5", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "document 1:" in out and "supporting the prediction (top-5 by signed attribution):" in out
    assert "opposing the prediction (bottom-5 by signed attribution):" in out
    assert "most attention received (all layers):" in out
    assert "max |kernel - pure-PyTorch reference| over 3 layers" in out and ": ok" in out
    index = (out_dir / "index.html").read_text()
    assert 'href="document-1.html"' in index and 'href="document-2.html"' in index and "AOPC rollout" in index
    assert (out_dir / "document-2.html").stat().st_size > 10_000
    # again into the same directory: fine, it is the demo's own
    assert main(["demo", "--documents", "1", "--max-words", "300", "--out", str(out_dir)]) == 0


def test_demo_refuses_a_foreign_directory(capsys, tmp_path):
    (tmp_path / "index.html").write_text("not pyattn's")
    assert main(["demo", "--documents", "1", "--out", str(tmp_path)]) == 2
    assert "was not written by `pyattn demo`" in capsys.readouterr().err
    assert (tmp_path / "index.html").read_text() == "not pyattn's"


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "pyattn.cli", "demo", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--documents" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "pyattn.cli", "demo", "--documents", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--documents must be at least 1" in bad.stderr


def test_a_route_the_model_cannot_take_is_refused_before_the_store(capsys, tmp_path):
    """--attention-route qk on Longformer (the demo model): one line naming
    the flag and the route that works, exit 2, no results store made."""
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "gradient descent on a neural network", "label": 0}\n')
    out = tmp_path / "store"
    assert main(["attribute", "--model", "demo", "--data", str(data), "--out", str(out), "--attention-route", "qk", "--steps", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the q/k route cannot read it" in err and "--attention-route 'auto'" in err
    assert not out.exists()
