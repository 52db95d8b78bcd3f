"""Fixtures (built from tests/testing.py, the shared testing module) and the
session's settings."""

from __future__ import annotations

import os
import sys

import pytest
import torch

# hypothesis: deterministic in CI, and no per-example deadline (the first call
# of a compiled op on a new shape can take a while on a loaded machine).
try:
    from hypothesis import settings

    settings.register_profile("pyattn", deadline=None, derandomize=True, print_blob=True)
    settings.load_profile("pyattn")
except ImportError:  # pragma: no cover
    pass

# Tests live in per-package folders (tests/compare/, tests/pipeline/, ...) that
# mirror pyattn's; the shared testing modules (testing.py, zoo.py) stay here.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from testing import DEVICES, LongformerRun, run_longformer, tiny_longformer  # noqa: E402


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def longformer_run() -> LongformerRun:
    """Batch of two, N = 37 (the model pads to 48 inside): item 0 has three
    global tokens (0, 3, 10: 3 inside 0's window and 0 inside 3's), item 1 has
    one (5) and padding from position 30 on."""
    model = tiny_longformer()
    generator = torch.Generator().manual_seed(1)
    B, N = 2, 37
    input_ids = torch.randint(3, 64, (B, N), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones(B, N, dtype=torch.long)
    attention_mask[1, 30:] = 0
    input_ids[1, 30:] = model.config.pad_token_id
    global_attention_mask = torch.zeros(B, N, dtype=torch.long)
    global_attention_mask[0, [0, 3, 10]] = 1
    global_attention_mask[1, 5] = 1
    return run_longformer(model, input_ids, attention_mask, global_attention_mask)


def pytest_report_header(config):
    import pyattn

    return f"pyattn {pyattn.__version__}: torch {torch.__version__}, CUDA kernels built: {pyattn.has_cuda_kernels()}, devices: {DEVICES}, threads: {torch.get_num_threads()}, cores: {os.cpu_count()}"
