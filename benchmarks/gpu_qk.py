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
"""

from __future__ import annotations

import argparse
import json
import statistics

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


def time_ms(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run(sizes=SIZES) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for n in sizes:
            g = torch.Generator(device="cuda").manual_seed(n)
            q = torch.randn(1, HEADS, n, HEAD_DIM, device="cuda", generator=g).to(dtype)
            k = torch.randn(1, HEADS, n, HEAD_DIM, device="cuda", generator=g).to(dtype)
            scale = HEAD_DIM**-0.5
            for name, (window, causal) in MASKS.items():
                op = lambda: attention_received_qk(q, k, scale, window=window, causal=causal)  # noqa: E731
                got = op()
                dense_fits = HEADS * n * n * 8 < 0.5 * torch.cuda.get_device_properties(0).total_memory
                row = dict(dtype=str(dtype).replace("torch.", ""), N=n, mask=name, op_ms=time_ms(op))
                if window[0] < 0:  # the model's own attention forward (sdpa, values = keys), beside the op
                    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=causal)  # noqa: E731
                    row["sdpa_ms"] = time_ms(sdpa)
                    row["op_over_sdpa"] = row["op_ms"] / row["sdpa_ms"]
                if dense_fits:
                    truth = dense_received(q.double(), k.double(), scale, window, causal, torch.float64)
                    row["max_rel_err"] = float(((got.double() - truth).abs().max() / truth.abs().max()).item())
                    del truth
                    dense = lambda: dense_received(q, k, scale, window, causal, dtype)  # noqa: E731
                    row["dense_ms"] = time_ms(dense)
                    row["dense_over_op"] = row["dense_ms"] / row["op_ms"]
                    torch.cuda.empty_cache()
                print(row, flush=True)
                rows.append(row)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()
    result = run(tuple(int(s) for s in args.sizes.split(",")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
