"""How long the README's commands take, measured in one run and written
where the README quotes them (between its `<!-- timings:start -->` and
`<!-- timings:end -->` markers) and to benchmarks/results/timings.json.

    python benchmarks/timings.py            # pyattn demo, the quickstart's three commands, the test suite
    python benchmarks/timings.py --no-tests # without the test suite

Each command runs in its own process, timed by wall clock, with the machine's
core count, load average before and after and torch's thread count recorded
beside it: on a shared machine the same command can take several times as
long, so the conditions are part of the number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(HERE, "results")


def timed(name: str, command: list[str], cwd: str) -> dict:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
    return {"name": name, "command": " ".join(command), "wall_seconds": wall, "exit_code": result.returncode,
            "load_before": load, "load_after": os.getloadavg()[0], "last_line": tail[0][:200]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-tests", action="store_true")
    args = parser.parse_args(argv)
    python = sys.executable
    pyattn = [python, "-m", "pyattn.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        rows.append(timed("pyattn demo", [*pyattn, "demo", "--out", os.path.join(work, "demo")], ROOT))
        from pyattn.demo import DOCS_CSV

        results = os.path.join(work, "results")
        rows.append(timed("pyattn attribute (quickstart: the shipped docs.csv)",
                          [*pyattn, "attribute", "--model", "demo", "--data", DOCS_CSV, "--id-column", "id", "--out", results, "--quiet"], ROOT))
        rows.append(timed("pyattn compare", [*pyattn, "compare", "--results", results, "--quiet"], ROOT))
        rows.append(timed("pyattn report", [*pyattn, "report", "--results", results, "--quiet"], ROOT))
        if not args.no_tests:
            rows.append(timed("the test suite (python -m pytest tests -q)", [python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"], ROOT))
    import torch

    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__, "rows": rows,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "timings.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [f"Measured {result['date']} by `python benchmarks/timings.py` (one run; {result['cores']} cores, torch "
             f"{result['torch']} with {result['threads']} threads; load average before each command in brackets: "
             "on a busy machine expect several times longer):", ""]
    for row in rows:
        status = "" if row["exit_code"] == 0 else f" (exit code {row['exit_code']})"
        lines.append(f"- {row['name']}: {row['wall_seconds']:.0f} s [{row['load_before']:.1f}]{status}")
    block = "\n".join(lines)
    text = open(README).read()
    new, count = re.subn(r"(<!-- timings:start -->\n).*?(\n<!-- timings:end -->)", lambda m: m.group(1) + block + m.group(2), text, flags=re.S)
    if count:
        with open(README, "w") as f:
            f.write(new)
    print(block)
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
