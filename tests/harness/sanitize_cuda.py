"""Run under compute-sanitizer by `make gpu-check`: every CUDA kernel of
pyattn on small inputs (per-head, fused, row weights, X = 0 and X = 3 with
unused slots, N < w, the dense conversion and the backward), so that memcheck
sees every load and store of the launch shapes."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pyattn  # noqa: E402
from testing import make_inputs  # noqa: E402

for B, H, N, X, w, counts in [(2, 3, 300, 3, 64, [3, 1]), (1, 2, 5, 0, 16, [0]), (3, 1, 600, 1, 512, [1, 0, 1])]:
    local, global_attn, mask = (None if t is None else t.cuda() for t in make_inputs(B, H, N, X, w, counts, seed=N))
    heads, rows = torch.rand(H, device="cuda"), torch.rand(B, N, device="cuda")
    for weights in [(None, None), (heads, None), (None, rows), (heads, rows)]:
        pyattn.attention_received(local, global_attn, mask, *weights)
    pyattn.band_to_dense(local[:, :, : min(N, 64)], global_attn, mask[:, : min(N, 64)] if mask is not None else None)
    band = local.clone().requires_grad_()
    pyattn.attention_received(band, global_attn, mask, heads).sum().backward()
torch.cuda.synchronize()
print("sanitize_cuda.py: all kernels ran")
