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

# The query-key op: full, windowed, causal, grouped-query heads, globals,
# padding, head and row weights, N not a multiple of the tile, half inputs.
from pyattn.kernels.ops import attention_received_qk  # noqa: E402

g = torch.Generator(device="cuda").manual_seed(0)
for B, H, Hkv, N, d, dtype in [(2, 6, 2, 77, 64, torch.float32), (1, 4, 4, 300, 32, torch.bfloat16), (1, 2, 1, 1, 16, torch.float16)]:
    q = torch.randn(B, H, N, d, device="cuda", generator=g).to(dtype)
    k = torch.randn(B, Hkv, N, d, device="cuda", generator=g).to(dtype)
    key_mask = torch.ones(B, N, dtype=torch.long, device="cuda")
    key_mask[-1, N - N // 3 :] = 0
    global_mask = torch.zeros(B, N, dtype=torch.long, device="cuda")
    global_mask[:, 0] = 1
    for window, causal, glob in [((-1, -1), False, None), ((8, 8), False, global_mask), ((-1, -1), True, None), ((15, -1), True, None)]:
        attention_received_qk(q, k, d**-0.5, key_mask=key_mask, window=window, causal=causal, global_mask=glob)
        attention_received_qk(q, k, d**-0.5, key_mask=key_mask, window=window, causal=causal, global_mask=glob,
                              head_weights=torch.rand(H, device="cuda"), row_weights=torch.rand(B, H, N, device="cuda"))
torch.cuda.synchronize()
print("sanitize_cuda.py: the query-key op ran")
