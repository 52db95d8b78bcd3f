"""Extra peak memory of attention received, against the dense size.

Each measurement runs in a fresh process: build the inputs (12 layers x 12
heads, w = 512, one global token), then reset the kernel's peak-RSS counter
(/proc/self/clear_refs) and run one route; extra = peak RSS during the route
minus RSS before it. On CUDA, torch's peak-allocated counter instead.

Run: python benchmarks/memory.py [--device cuda] [--sizes 1024 2048 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

ROUTES = ("extension", "vectorised", "dense_route")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(route: str, n: int, device: str) -> None:
    sys.path.insert(0, HERE)
    import torch

    import pyattn
    from inputs import longformer_like
    from pyattn.kernels import reference

    attentions, global_attentions, mask = longformer_like(12, 12, n)
    attentions = [a.to(device) for a in attentions]
    global_attentions = [g.to(device) for g in global_attentions]
    mask = mask.to(device)
    importance = torch.rand(12, 12, device=device)

    def run():
        if route == "extension":
            return pyattn.layer_attention_received(attentions, global_attentions, mask, importance).per_layer
        if route == "vectorised":
            return torch.stack([reference.attention_received_banded(a, g, mask, importance[i]) for i, (a, g) in enumerate(zip(attentions, global_attentions))])
        # dense route, one layer at a time (the original kept all 12 at once)
        return torch.stack([torch.einsum("bhij,h->bj", pyattn.band_to_dense(a, g, mask), importance[i]) for i, (a, g) in enumerate(zip(attentions, global_attentions))])

    # Warm up on a small input: code pages, thread pools and CUDA context are
    # loaded once per process and are not the route's memory.
    small = longformer_like(1, 12, 600)
    pyattn.layer_attention_received(*[[t.to(device) for t in part] for part in small[:2]], small[2].to(device), importance[:1])
    reference.attention_received_banded(small[0][0].to(device), small[1][0].to(device), small[2].to(device), importance[0])
    torch.einsum("bhij,h->bj", pyattn.band_to_dense(small[0][0].to(device), small[1][0].to(device), small[2].to(device)), importance[0])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = run()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM (peak RSS) to the current RSS
        before = _status_kib("VmRSS")
        out = run()
        extra = (_status_kib("VmHWM") - before) * 1024
    assert out.shape == (12, 1, n)
    print(json.dumps({"extra_bytes": extra}))


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:,.0f} KiB"


def measure(route: str, n: int, device: str) -> int:
    result = subprocess.run(
        [sys.executable, __file__, "--child", route, "--sizes", str(n), "--device", device],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["extra_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--child", choices=ROUTES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sizes[0], args.device)
        return
    print(f"| N | dense, 12 layers | dense, one layer | {' | '.join(ROUTES)} | extension / one layer's dense |")
    print("|---|---|---|" + "---|" * len(ROUTES) + "---|")
    for n in args.sizes:
        one_layer = 12 * n * n * 4
        extras = {route: measure(route, n, args.device) for route in ROUTES}
        cells = " | ".join(_size(extras[r]) for r in ROUTES)
        ratio = extras["extension"] / one_layer
        print(f"| {n} | {12 * one_layer / 2**30:,.2f} GiB | {one_layer / 2**20:,.0f} MiB | {cells} | {ratio:.4%} |")


if __name__ == "__main__":
    main()
