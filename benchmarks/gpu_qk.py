"""GPU benchmark of attention_received_qk, for the lead's GPU script:
``run() -> list[dict]`` (or ``python benchmarks/gpu_qk.py [--json PATH]``).

For float32 and bfloat16 inputs, B = 1, H = 12, d = 64, N = 1,024-16,384,
full attention, a symmetric window of 128 (64 each side) and causal, it times
with CUDA events (median of 10 calls after a warm-up)

- ``op``: the CUDA op (two passes over tiles, no N x N);
- ``sdpa``: the attention forward the model itself runs
  (``scaled_dot_product_attention``, values = keys; full and causal only),
  so the op's cost reads beside the model's own attention;
- ``dense``: torch's dense route in the input dtype:
  ``torch.softmax(q @ k^T * scale + mask)`` materialised, then column sums
  accumulated in float32 (only where (H, N, N) fits: N <= 16,384 is 12 GB in
  float32);

after checking that they agree: max relative error of the op against the
dense result computed in float64 from the same inputs (printed and returned).

Each row is written to ``--json`` as soon as it is measured, so a stage cut
off by its timeout keeps what it measured; a dense reference that runs out of
GPU memory is recorded as such (``dense``: ``"out of memory"``) and the run
goes on. ``--device cpu --sizes 256,512`` rehearses the script on a CPU
(wall-clock timing instead of CUDA events), as ``make gpu-rehearsal`` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pyattn.kernels.ops import attention_received_qk

HEADS, HEAD_DIM = 12, 64
SIZES = (1024, 2048, 4096, 8192, 16384)
MASKS = {"full": ((-1, -1), False), "window128": ((64, 64), False), "causal": ((-1, -1), True)}


def dense_received(q, k, scale, window, causal, dtype):
    n = q.shape[2]
    scores = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale
    i = torch.arange(n, device=q.device)
    allowed = torch.ones(n, n, dtype=torch.bool, device=q.device)
    if window[0] >= 0:
        allowed &= (i[None, :] - i[:, None]).abs() <= window[0]
    if causal:
        allowed &= i[None, :] <= i[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, -1).sum(2, dtype=torch.float32)


def time_ms(fn, device: str, repeats: int = 10) -> float:
    """Median of ``repeats`` calls after a warm-up: CUDA events on a GPU, the wall clock on a CPU."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def dense_fits(n: int, device: str) -> bool:
    """Whether the float64 reference fits: scores, the masked scores and the
    probabilities, (H, N, N) each, at once, in half the device's memory."""
    need = 3 * HEADS * n * n * 8
    if device == "cuda":
        return need < 0.5 * torch.cuda.get_device_properties(0).total_memory
    return need < 2 * 2**30


def run(sizes=SIZES, device: str = "cuda", json_path: str | None = None) -> list[dict]:
    rows = []
    out_of_memory = torch.cuda.OutOfMemoryError if device == "cuda" else MemoryError
    for dtype in (torch.float32, torch.bfloat16):
        for n in sizes:
            g = torch.Generator(device=device).manual_seed(n)
            q = torch.randn(1, HEADS, n, HEAD_DIM, device=device, generator=g).to(dtype)
            k = torch.randn(1, HEADS, n, HEAD_DIM, device=device, generator=g).to(dtype)
            scale = HEAD_DIM**-0.5
            for name, (window, causal) in MASKS.items():
                op = lambda: attention_received_qk(q, k, scale, window=window, causal=causal)  # noqa: E731
                got = op()
                row = dict(dtype=str(dtype).replace("torch.", ""), N=n, mask=name, op_ms=time_ms(op, device))
                if window[0] < 0:  # the model's own attention forward (sdpa, values = keys), beside the op
                    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=causal)  # noqa: E731
                    row["sdpa_ms"] = time_ms(sdpa, device)
                    row["op_over_sdpa"] = row["op_ms"] / row["sdpa_ms"]
                if dense_fits(n, device):
                    try:
                        truth = dense_received(q.double(), k.double(), scale, window, causal, torch.float64)
                        row["max_rel_err"] = float(((got.double() - truth).abs().max() / truth.abs().max()).item())
                        del truth
                        dense = lambda: dense_received(q, k, scale, window, causal, dtype)  # noqa: E731
                        row["dense_ms"] = time_ms(dense, device)
                        row["dense_over_op"] = row["dense_ms"] / row["op_ms"]
                    except out_of_memory:
                        row["dense"] = "out of memory"
                    if device == "cuda":
                        torch.cuda.empty_cache()
                else:
                    row["dense"] = "not run: (H, N, N) in float64 is over half the memory"
                print(row, flush=True)
                rows.append(row)
                if json_path:  # after every row: a stage cut off by its timeout keeps what it measured
                    with open(json_path, "w") as f:
                        json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here (after every row)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a rehearsal of the script")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run it on a GPU, or rehearse it with --device cpu")
    run(tuple(int(s) for s in args.sizes.split(",")), args.device, args.json)
