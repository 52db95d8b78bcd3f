"""Model level: all layers of a Longformer output (windows differ per layer),
head importance, the original notebooks' summaries, layer ranges, and the
dense conversion of one layer under a memory limit."""

from __future__ import annotations

import pytest
import torch

import pyattn
from pyattn.kernels import reference


def reference_per_head(run) -> torch.Tensor:
    """(L, B, H, N) column sums of the reference dense matrices."""
    out = run.output
    return torch.stack(
        [
            reference.attention_received(band.double(), glob.double(), run.global_attention_mask)
            for band, glob in zip(out.attentions, out.global_attentions)
        ]
    )


def test_windows_differ_per_layer(longformer_run):
    widths = {a.shape[-1] for a in longformer_run.output.attentions}
    assert len(widths) == 3  # the tuple cannot be stacked


def test_per_layer_per_head_and_summaries(longformer_run):
    expected = reference_per_head(longformer_run)  # (L, B, H, N)
    per_head = pyattn.layer_attention_received(longformer_run.output, global_attention_mask=longformer_run.global_attention_mask, per_head=True)
    assert per_head.per_layer.shape == (3, 2, 4, 37) and not per_head.head_weighted
    torch.testing.assert_close(per_head.per_layer.double(), expected, atol=1e-5, rtol=1e-5)

    fused = pyattn.layer_attention_received(
        longformer_run.output.attentions, longformer_run.output.global_attentions, longformer_run.global_attention_mask
    )
    summed = expected.sum(2)  # heads summed, as the original notebooks did
    assert fused.per_layer.shape == (3, 2, 37)
    torch.testing.assert_close(fused.per_layer.double(), summed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.final_layer.double(), summed[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.all_layers.double(), summed.sum(0), atol=1e-5, rtol=1e-5)
    # layers are numbered from 0, ranges inclusive
    torch.testing.assert_close(fused.layer_range(0, 1).double(), summed[:2].sum(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.select("1-2").double(), summed[1:3].sum(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.select((0, 0)), fused.per_layer[0])
    torch.testing.assert_close(fused.select("final"), fused.final_layer)
    torch.testing.assert_close(fused.select("all"), fused.all_layers)
    torch.testing.assert_close(fused.select(-1), fused.final_layer)
    torch.testing.assert_close(fused.select(1), fused.per_layer[1])
    torch.testing.assert_close(fused.select("2"), fused.per_layer[2])
    with pytest.raises(ValueError, match="empty"):
        fused.layer_range(2, 0)
    torch.testing.assert_close(fused.select("-1"), fused.select(-1))  # a number as text or as an int: the same layer
    for bad in (3, "3", -4, "-4"):  # and the same refusal
        with pytest.raises(IndexError, match=rf"^layer {int(bad)} is out of range: layers are numbered 0\.\.2 \(or -1\.\.-3 from the end\)$"):
            fused.select(bad)
    for bad, message in [("2-0", "empty"), ("1-99", "layer 99 does not exist"), ("1--2", "not understood"), ("x", "not understood")]:
        with pytest.raises(ValueError, match=message):
            fused.select(bad)


def test_head_importance_scales_each_head(longformer_run):
    importance = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    expected = reference_per_head(longformer_run) * importance.double()[:, None, :, None]
    mask = longformer_run.global_attention_mask
    fused = pyattn.layer_attention_received(longformer_run.output, global_attention_mask=mask, head_importance=importance)
    assert fused.head_weighted
    torch.testing.assert_close(fused.per_layer.double(), expected.sum(2), atol=1e-5, rtol=1e-5)
    per_head = pyattn.layer_attention_received(longformer_run.output, global_attention_mask=mask, head_importance=importance, per_head=True)
    torch.testing.assert_close(per_head.per_layer.double(), expected, atol=1e-5, rtol=1e-5)


def test_stacked_layers_as_the_notebooks_kept_them():
    """Layers of one window stacked into (L, B, H, N, D) work too."""
    from testing import run_longformer, tiny_longformer

    model = tiny_longformer(windows=(8, 8), seed=5)
    ids = torch.randint(3, 64, (1, 19), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(ids)
    mask[0, 0] = 1
    run = run_longformer(model, ids, torch.ones_like(ids), mask)
    stacked = pyattn.layer_attention_received(torch.stack(run.output.attentions), torch.stack(run.output.global_attentions), mask)
    tupled = pyattn.layer_attention_received(run.output.attentions, run.output.global_attentions, mask)
    torch.testing.assert_close(stacked.per_layer, tupled.per_layer)


def test_layer_to_dense_heads_and_limit(longformer_run):
    out, mask = longformer_run.output, longformer_run.global_attention_mask
    full = pyattn.layer_to_dense(out, global_attention_mask=mask, layer=1)  # layers from 0
    torch.testing.assert_close(full, pyattn.band_to_dense(out.attentions[1], out.global_attentions[1], mask))
    some = pyattn.layer_to_dense(out, global_attention_mask=mask, layer=1, heads=[3, 1])
    torch.testing.assert_close(some, full[:, [3, 1]])
    one = pyattn.layer_to_dense(out, global_attention_mask=mask, layer=-1, heads=0)
    assert one.shape == (2, 1, 37, 37)

    size = 2 * 4 * 37 * 37 * 4
    with pytest.raises(pyattn.DenseTooLarge, match=r"layer 1 would be .* MiB \(B=2 x heads=4 x 37 x 37 x 4 bytes\), over the limit"):
        pyattn.layer_to_dense(out, global_attention_mask=mask, layer=1, max_bytes=size - 1)
    assert pyattn.layer_to_dense(out, global_attention_mask=mask, layer=1, max_bytes=size).shape == (2, 4, 37, 37)
    assert pyattn.layer_to_dense(out, global_attention_mask=mask, layer=1, max_bytes=None).shape == (2, 4, 37, 37)


def test_default_limit_refuses_a_whole_base_model_layer_of_a_long_document():
    """12 heads x 16384^2 float32 = 12 GiB for one layer: refused before any
    allocation, the message naming the size."""
    band = torch.zeros(1).expand(1, 12, 16384, 514)  # stride-0 views: no memory
    glob = torch.zeros(1).expand(1, 12, 16384, 1)
    mask = torch.zeros(1, 16384, dtype=torch.long)
    with pytest.raises(pyattn.DenseTooLarge, match=r"12,288.0 MiB"):
        pyattn.layer_to_dense([band], [glob], mask, layer=0)


# --- One call for all layers (pyattn.kernels.ops.attention_received_layers) ----------


def test_all_layers_in_one_call_against_the_reference(longformer_run):
    """Windows 4, 16, 8 in one call; head weights (L, H) and row weights, both
    (B, N) for every layer and (L, B, N), against the dense reference."""
    from pyattn.kernels.ops import attention_received_layers

    out, mask = longformer_run.output, longformer_run.global_attention_mask
    generator = torch.Generator().manual_seed(7)
    heads = torch.rand(3, 4, generator=generator)
    rows = torch.rand(3, 2, 37, generator=generator)
    got = attention_received_layers(out.attentions, out.global_attentions, mask, heads, rows)
    assert got.shape == (3, 2, 37)
    for layer, (band, glob) in enumerate(zip(out.attentions, out.global_attentions)):
        expected = reference.attention_received(band.double(), glob.double(), mask, heads[layer].double(), rows[layer].double())
        torch.testing.assert_close(got[layer].double(), expected, atol=1e-5, rtol=1e-5)
    shared_rows = attention_received_layers(out.attentions, out.global_attentions, mask, None, rows[0])
    assert shared_rows.shape == (3, 2, 4, 37)
    for layer, (band, glob) in enumerate(zip(out.attentions, out.global_attentions)):
        expected = reference.attention_received(band.double(), glob.double(), mask, None, rows[0].double())
        torch.testing.assert_close(shared_rows[layer].double(), expected, atol=1e-5, rtol=1e-5)


def test_all_layers_errors_name_the_layer(longformer_run):
    from pyattn.kernels.ops import attention_received_layers

    out, mask = longformer_run.output, longformer_run.global_attention_mask
    with pytest.raises(RuntimeError, match=r"local_attn has 3 layers but global_attn has 2"):
        attention_received_layers(out.attentions, out.global_attentions[:2], mask)
    with pytest.raises(RuntimeError, match=r"head_weights must have shape \(L, H\) with L = 3 layers, got shape \[2, 4\]"):
        attention_received_layers(out.attentions, out.global_attentions, mask, torch.ones(2, 4))
    with pytest.raises(RuntimeError, match=r"row_weights must have shape \(B, N\) \(every layer\) or \(L, B, N\)"):
        attention_received_layers(out.attentions, out.global_attentions, mask, None, torch.ones(2, 2, 37))
    bad = list(out.attentions)
    bad[2] = bad[2][:, :3]
    with pytest.raises(RuntimeError, match=r"layer 2 \(0-based; local_attn\[2\]\): global_attn has shape \[2, 4, 48, 3\] but its dimension 1 \(heads H\) must be 3"):
        attention_received_layers(bad, out.global_attentions, mask)
    wrong = mask.clone()
    wrong[0, 10] = 0
    with pytest.raises(RuntimeError, match=r"layer 0 \(0-based; local_attn\[0\]\): global_attention_mask marks 2 global tokens in item 0"):
        attention_received_layers(out.attentions, out.global_attentions, wrong)


def test_all_layers_gradients_and_opcheck(longformer_run):
    """Gradients flow to every layer's band and global attention and to the
    (L, H) head weights; opcheck on the composite op; torch.compile traces it."""
    from pyattn.kernels.ops import attention_received_layers

    out, mask = longformer_run.output, longformer_run.global_attention_mask
    local = [a.double().requires_grad_() for a in out.attentions]
    glob = [g.double().requires_grad_() for g in out.global_attentions]
    heads = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    total = attention_received_layers(local, glob, mask, heads).sum()
    total.backward()
    # d(sum)/d head_weights[l, h] = total attention of layer l, head h: the
    # number of valid rows (every valid row sums to 1) = 37 + 30 rows.
    torch.testing.assert_close(heads.grad, torch.full((3, 4), 67.0, dtype=torch.float64), atol=1e-5, rtol=1e-6)
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in local + glob)
    torch.library.opcheck(
        torch.ops.pyattn.attention_received_layers.default,
        ([a.double() for a in out.attentions], [g.double() for g in out.global_attentions], mask, heads.detach(), None),
    )
    compiled = torch.compile(lambda a, g, m: attention_received_layers(a, g, m).sum(2), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(out.attentions, out.global_attentions, mask), attention_received_layers(out.attentions, out.global_attentions, mask).sum(2))
