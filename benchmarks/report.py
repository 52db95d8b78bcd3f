"""Markdown table of a pytest-benchmark JSON run: median per route, and its
ratio to the floor of its group (the .sum() pass, or the zero-fill) and, for
attention received, to the vectorised pure-PyTorch version.

Run: python benchmarks/report.py build/bench.json
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

FLOORS = ("floor",)


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    notes: dict[tuple[str, str], str] = {}
    for bench in data["benchmarks"]:
        route = re.sub(r"^test_(received|dense|scaling|attribution|throughput)_|\[.*\]$", "", bench["name"])
        param = re.search(r"\[(.*)\]$", bench["name"])
        if param and not bench["group"].endswith("-" + param.group(1)):
            route = f"{route} ({param.group(1)})"
        groups[bench["group"]][route] = bench["stats"]["median"]
        extra = bench.get("extra_info") or {}
        notes[bench["group"], route] = ", ".join(
            f"{k.replace('_', ' ')} {v:.2%}" if k == "relative_error" else f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}" for k, v in extra.items()
        )
    machine = data.get("machine_info", {})
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} cores; "
          f"{data.get('datetime', '')}\n")

    def key(group: str):
        kind, _, n = group.rpartition("-")
        return (kind, int(n)) if n.isdigit() else (group, 0)

    for group in sorted(groups, key=key):
        routes = groups[group]
        floor = next((t for r, t in routes.items() if any(f in r for f in FLOORS)), None)
        vectorised = routes.get("vectorised_pytorch")
        print(f"**{group}**\n")
        print("| route | median | x floor | x vectorised PyTorch | notes |")
        print("|---|---:|---:|---:|---|")
        for route, t in sorted(routes.items(), key=lambda kv: kv[1]):
            x_floor = f"{t / floor:,.2f}" if floor else "-"
            x_vec = f"{t / vectorised:,.3f}" if vectorised else "-"
            print(f"| {route} | {t * 1e3:,.2f} ms | {x_floor} | {x_vec} | {notes.get((group, route), '')} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/bench.json")
