"""Bad input gets a clear error naming the argument, its shape and what was
expected: never a crash in a kernel or silent garbage."""

from __future__ import annotations

import re

import pytest
import torch

import pyattn
from testing import make_inputs


@pytest.fixture
def good():
    """B=2, H=3, N=10, X=2, w=4: local (2, 3, 10, 7), global (2, 3, 12, 2)."""
    local, global_attn, mask = make_inputs(2, 3, 10, 2, 4, [2, 1], seed=0, pad_extra=2)
    return local, global_attn, mask


def both_ops_raise(args, pattern, head_weights=None):
    local, global_attn, mask = args
    with pytest.raises(RuntimeError, match=pattern):
        pyattn.band_to_dense(local, global_attn, mask)
    with pytest.raises(RuntimeError, match=pattern):
        pyattn.attention_received(local, global_attn, mask, head_weights)


def test_wrong_number_of_dimensions(good):
    local, global_attn, mask = good
    both_ops_raise((local[0], global_attn, mask), r"local_attn must be 4-D \(B, H, N, X \+ w \+ 1\), got 3-D tensor of shape \[3, 10, 7\]")
    both_ops_raise((local, global_attn[0], mask), r"global_attn must be 4-D \(B, H, N_pad, X\), got 3-D tensor of shape \[3, 12, 2\]")
    both_ops_raise((local, global_attn, mask[0]), r"global_attention_mask must be 2-D \(B, N\), got 1-D")


def test_band_width_that_fits_no_even_window(good):
    local, global_attn, mask = good
    # X = 2 and a last dimension of 8 leave w = 5: odd.
    wide = torch.rand(2, 3, 10, 8)
    both_ops_raise((wide, global_attn, mask), r"X \+ w \+ 1 for an even window w >= 2, with X = 2 .* got last dimension 8 .*w = 5")
    # No global_attn: X = 0, last dimension 7 leaves w = 6 (fine); 2 leaves w = 1.
    both_ops_raise((torch.rand(2, 3, 10, 2), None, None), r"got last dimension 2 .*w = 1")


def test_sizes_that_disagree(good):
    local, global_attn, mask = good
    both_ops_raise((local, global_attn[:1], mask), r"global_attn has shape \[1, 3, 12, 2\] but its dimension 0 \(batch B\) must be 2")
    both_ops_raise((local, global_attn[:, :2], mask), r"global_attn has shape \[2, 2, 12, 2\] but its dimension 1 \(heads H\) must be 3")
    both_ops_raise((local, global_attn, mask[:, :9]), r"global_attention_mask has shape \[2, 9\] but its dimension 1 \(sequence length N\) must be 10")
    both_ops_raise((local, global_attn, mask[:1]), r"global_attention_mask has shape \[1, 10\] but its dimension 0 \(batch B\) must be 2")


def test_global_attn_shorter_than_n(good):
    local, global_attn, mask = good
    both_ops_raise((local, global_attn[:, :, :9], mask), r"global_attn has shape \[2, 3, 9, 2\] but its dimension 2 \(N_pad\) must be at least N = 10")


def test_mask_missing_when_there_are_global_slots(good):
    local, global_attn, _ = good
    both_ops_raise((local, global_attn, None), r"global_attention_mask is required when global_attn has X = 2 global slots")


def test_more_global_tokens_than_slots(good):
    local, global_attn, mask = good
    mask = mask.clone()
    mask[1, :4] = 1
    both_ops_raise((local, global_attn, mask), r"marks \d global tokens in item 1 but global_attn has only X = 2 global slots")
    # No global_attn at all (X = 0) but the mask marks tokens.
    band = local[..., 2:]
    both_ops_raise((band, None, mask), r"but global_attn has only X = 0 global slots")


def test_integer_and_mismatched_dtypes(good):
    local, global_attn, mask = good
    both_ops_raise((local.long(), global_attn, mask), r"local_attn must be float16, bfloat16, float32 or float64, got Long")
    both_ops_raise((local, global_attn.double(), mask), r"global_attn has dtype Double but local_attn has Float; they must match")
    both_ops_raise((local, global_attn, mask.float()), r"global_attention_mask must be bool or integer \(1 = global\), got Float")


def test_bool_and_int_masks_agree(good):
    local, global_attn, mask = good
    torch.testing.assert_close(
        pyattn.attention_received(local, global_attn, mask.bool()), pyattn.attention_received(local, global_attn, mask.int())
    )


def test_head_and_row_weights_of_the_wrong_shape(good):
    local, global_attn, mask = good
    with pytest.raises(RuntimeError, match=r"head_weights must have shape \(H,\) = \(3,\) .*got shape \[4\]"):
        pyattn.attention_received(local, global_attn, mask, torch.ones(4))
    with pytest.raises(RuntimeError, match=r"head_weights must be float16, bfloat16, float32 or float64, got Long"):
        pyattn.attention_received(local, global_attn, mask, torch.ones(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"row_weights must have shape \(B, N\) = \(2, 10\) .*got shape \[2, 9\]"):
        pyattn.attention_received(local, global_attn, mask, None, torch.ones(2, 9))


def test_tensors_on_different_devices(good):
    local, global_attn, mask = good
    if torch.cuda.is_available():
        both_ops_raise((local, global_attn.cuda(), mask), r"global_attn is on cuda:0 but local_attn is on cpu")
        both_ops_raise((local.cuda(), global_attn.cuda(), mask), r"global_attention_mask is on cpu but local_attn is on cuda:0")
    # Without a GPU: call the CPU kernel itself with an argument on another
    # device (meta), as the dispatcher would with a CUDA tensor among CPU ones.
    cpu_kernel = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    with pytest.raises(RuntimeError, match=r"global_attention_mask is on meta but local_attn is on cpu; all arguments must be on one device"):
        torch.ops.pyattn.attention_received.default.redispatch(cpu_kernel, local, global_attn, mask.to("meta"), None, None)
    with pytest.raises(RuntimeError, match=r"head_weights is on meta but local_attn is on cpu"):
        torch.ops.pyattn.attention_received.default.redispatch(cpu_kernel, local, global_attn, mask, torch.ones(3, device="meta"), None)
    with pytest.raises(RuntimeError, match=r"global_attn is on meta but local_attn is on cpu"):
        torch.ops.pyattn.band_to_dense.default.redispatch(cpu_kernel, local, global_attn.to("meta"), mask)
    # The fake (meta) kernel checks devices too.
    with pytest.raises(RuntimeError, match=r"on one device"):
        pyattn.attention_received(local.to("meta"), global_attn, mask.to("meta"))


def test_model_level_errors(longformer_run):
    out = longformer_run.output
    mask = longformer_run.global_attention_mask
    with pytest.raises(ValueError, match=r"head_importance must have shape \(L, H\) = \(3, 4\) .*got \(3, 5\)"):
        pyattn.layer_attention_received(out.attentions, out.global_attentions, mask, head_importance=torch.ones(3, 5))
    with pytest.raises(ValueError, match="attentions has 3 layers but global_attentions has 2"):
        pyattn.layer_attention_received(out.attentions, out.global_attentions[:2], mask)
    with pytest.raises(ValueError, match="output_attentions=True"):
        pyattn.layer_attention_received(None, None, mask)
    with pytest.raises(RuntimeError, match=r"layer 0 \(0-based; local_attn\[0\]\): global_attention_mask is required"):
        pyattn.layer_attention_received(out.attentions, out.global_attentions, None)
    with pytest.raises(IndexError, match=r"layer 3 is out of range: layers are numbered 0..2"):
        pyattn.layer_to_dense(out, global_attention_mask=mask, layer=3)
    with pytest.raises(IndexError, match=re.escape("heads [7] out of range")):
        pyattn.layer_to_dense(out, global_attention_mask=mask, layer=1, heads=[0, 7])


# --- A mask that disagrees with the attention tensors is refused -----------
# The truth is the mask the tiny model really ran with (longformer_run: item 0
# global at 0, 3, 10; item 1 at 5; X = 3). Hugging Face's Longformer writes
# exact zeros in the local rows of global tokens and in the local columns of
# an item's unused global slots; every other mask contradicts those zeros.


def _ops_on_every_layer(run, mask):
    out = run.output
    for band, global_attn in zip(out.attentions, out.global_attentions):
        both_ops_raise((band, global_attn, mask), PATTERN_HOLDER[0])


PATTERN_HOLDER = [""]


@pytest.mark.parametrize(
    "change, pattern",
    [
        # Fewer global tokens than the model used: item 0 loses position 10.
        (lambda m: m.__setitem__((0, 10), 0), r"marks 2 global tokens in item 0 but local_attn's global slot 2 carries attention"),
        # Item 1 (one global token) loses it: slot 0 carries attention.
        (lambda m: m.__setitem__((1, 5), 0), r"marks 0 global tokens in item 1 but local_attn's global slot 0 carries attention"),
        # Right count, wrong position: 5 -> 6 in item 1.
        (lambda m: (m.__setitem__((1, 5), 0), m.__setitem__((1, 6), 1)), r"marks position 6 of item 1 as global but local_attn\[1, :, 6, :\] is not all zero"),
        # More global tokens than the model used (still <= X): item 1 gains 7.
        (lambda m: m.__setitem__((1, 7), 1), r"marks position 7 of item 1 as global but local_attn\[1, :, 7, :\] is not all zero"),
        # More than X = 3.
        (lambda m: m[0, 20:22].fill_(1), r"marks 5 global tokens in item 0 but global_attn has only X = 3 global slots"),
        # No global token at all while the model had X = 3 slots.
        (lambda m: m.zero_(), r"marks 0 global tokens in item 0 but local_attn's global slot 0 carries attention"),
    ],
)
def test_mask_that_disagrees_with_the_model_run_is_refused(longformer_run, change, pattern):
    mask = longformer_run.global_attention_mask.clone()
    change(mask)
    PATTERN_HOLDER[0] = pattern
    _ops_on_every_layer(longformer_run, mask)
    with pytest.raises(RuntimeError, match=pattern):
        pyattn.layer_attention_received(longformer_run.output, global_attention_mask=mask)


def test_mask_the_model_ran_with_is_accepted_also_for_one_item_of_a_batch(longformer_run):
    """Item 1 taken alone keeps the batch's X = 3 slots with only one used:
    consistent (its unused slots carry no attention), and its attention
    received equals the batch's row for it."""
    out, mask = longformer_run.output, longformer_run.global_attention_mask
    for band, global_attn in zip(out.attentions, out.global_attentions):
        batch = pyattn.attention_received(band, global_attn, mask)
        alone = pyattn.attention_received(band[1:], global_attn[1:], mask[1:])
        torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=0)
        dense = pyattn.band_to_dense(band[1:], global_attn[1:], mask[1:])
        torch.testing.assert_close(dense.sum(2)[0], batch[1], rtol=1e-6, atol=1e-6)
