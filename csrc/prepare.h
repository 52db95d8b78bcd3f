// Validation of the ops' arguments and the per-item global-token tables, shared
// by the CPU and CUDA kernels (and the test-only host emulator). Host code on
// ATen only; the tables are built with device-agnostic tensor ops.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <optional>

#include "band_kernels.h"
#include "checks.h"

namespace pyattn {

// Everything a kernel needs, validated. Tensors are kept alive here; the
// raw BandParams point into them.
struct Prepared {
  at::Tensor local, global;        // global is undefined when X == 0
  at::Tensor slot_of;              // (B, N) int64
  at::Tensor global_pos;           // (B, X) int64
  at::Tensor head_weights;         // (H,) acc type, or undefined
  at::Tensor row_weights;          // (B, N) acc type, or undefined
  int64_t B = 0, H = 0, N = 0, X = 0, w = 0;
};

// What the attention tensors reveal about the mask the model ran with
// (../shared/LONGFORMER_LAYOUT.md; Hugging Face's Longformer writes exact
// zeros in both places):
//  1. no item has more global tokens than global_attn's X slots;
//  2. slot m of an item with fewer than m + 1 global tokens is unused, so its
//     local column local_attn[b, :, :, m] is 0 (the model gives an unused slot
//     no attention): a nonzero value there means the model ran with more
//     global tokens than the mask marks;
//  3. the local row of a global token is 0 (its real row is in global_attn):
//     a nonzero local row at a position the mask marks as global means the
//     model did not treat that position as global.
// On the CPU the check runs on the host and names the item, position and slot.
// On other devices it is an asynchronous device-side assert (no host
// synchronisation; the error surfaces at the next synchronising call).
inline void check_mask_agrees(const at::Tensor& local_attn,
                              const std::optional<at::Tensor>& global_attn,
                              const at::Tensor& is_global, const Prepared& p) {
  const at::Tensor counts = is_global.sum(1);  // (B,)
  const at::Tensor slots = at::arange(p.X, counts.options());
  // (B, X): slot m of item b is in use. Rows (B, H, X, D) of the global tokens.
  const at::Tensor used = slots.unsqueeze(0).lt(counts.unsqueeze(1));
  const at::Tensor rows = local_attn.gather(
      2, p.global_pos.clamp_min(0)
             .view({p.B, 1, p.X, 1})
             .expand({p.B, p.H, p.X, local_attn.size(3)}));
  const at::Tensor row_nonzero =  // (B, X): a marked global token's local row is not 0
      rows.ne(0).any(3).any(1).logical_and(used);
  if (local_attn.device().is_cpu()) {
    const auto c = counts.accessor<int64_t, 1>();
    for (int64_t b = 0; b < p.B; ++b) {
      TORCH_CHECK(c[b] <= p.X, "global_attention_mask marks ", c[b],
                  " global tokens in item ", b, " but global_attn has only X = ",
                  p.X, " global slots (global_attn shape ",
                  global_attn.has_value() && global_attn->defined()
                      ? global_attn->sizes()
                      : at::IntArrayRef{},
                  "); pass the mask the model was run with");
    }
    for (int64_t b = 0; b < p.B; ++b) {
      if (c[b] >= p.X) continue;
      const at::Tensor unused = local_attn.select(0, b).narrow(2, c[b], p.X - c[b]);
      const at::Tensor carries = unused.ne(0).any(0).any(0);  // (X - c_b,)
      if (!carries.any().item<bool>()) continue;
      const int64_t m = c[b] + carries.nonzero().min().item<int64_t>();
      TORCH_CHECK(false, "global_attention_mask marks ", c[b],
                  " global tokens in item ", b, " but local_attn's global slot ",
                  m, " carries attention for that item (nonzero values in "
                  "local_attn[", b, ", :, :, ", m, "]): the model ran with more "
                  "global tokens; pass the mask the model was run with");
    }
    if (p.X > 0 && row_nonzero.any().item<bool>()) {
      const at::Tensor where = row_nonzero.nonzero();  // (k, 2): (b, m)
      const int64_t b = where[0][0].item<int64_t>();
      const int64_t m = where[0][1].item<int64_t>();
      const int64_t g = p.global_pos[b][m].item<int64_t>();
      TORCH_CHECK(false, "global_attention_mask marks position ", g,
                  " of item ", b, " as global but local_attn[", b, ", :, ", g,
                  ", :] is not all zero, as the local row of a global token "
                  "is: the model did not run with that position global; pass "
                  "the mask the model was run with");
    }
    return;
  }
  at::_assert_async(
      counts.gt(p.X).any().logical_not(),
      "global_attention_mask marks more global tokens in an item than "
      "global_attn has slots (X = global_attn.size(3)); pass the mask the "
      "model was run with");
  if (p.X == 0) return;
  at::_assert_async(
      local_attn.narrow(3, 0, p.X).ne(0).any(2).any(1)
          .logical_and(used.logical_not())
          .any()
          .logical_not(),
      "global_attention_mask marks fewer global tokens in an item than "
      "local_attn's global slots that carry attention: the model ran with "
      "more global tokens; pass the mask the model was run with");
  at::_assert_async(
      row_nonzero.any().logical_not(),
      "global_attention_mask marks a position as global whose local_attn row "
      "is not all zero, as the local row of a global token is: the model did "
      "not run with that position global; pass the mask the model was run "
      "with");
}

// attention_received's tensor arguments in its schema's order
// (csrc/pyattn.cpp), as prepare and every backend's entry point (CPU, CUDA,
// the host emulator) take them.
#define PYATTN_BAND_PARAMS                                                   \
  const at::Tensor &local_attn, const std::optional<at::Tensor> &global_attn, \
      const std::optional<at::Tensor> &global_attention_mask,                 \
      const std::optional<at::Tensor> &head_weights,                          \
      const std::optional<at::Tensor> &row_weights
#define PYATTN_BAND_ARGS \
  local_attn, global_attn, global_attention_mask, head_weights, row_weights

inline Prepared prepare(PYATTN_BAND_PARAMS) {
  Prepared p;
  // 1. dimensions
  PYATTN_CHECK_DIM(local_attn, "local_attn", 4, "(B, H, N, X + w + 1)");
  const bool has_global = global_attn.has_value() && global_attn->defined();
  if (has_global) {
    PYATTN_CHECK_DIM(*global_attn, "global_attn", 4, "(B, H, N_pad, X)");
  }
  const bool has_mask =
      global_attention_mask.has_value() && global_attention_mask->defined();
  if (has_mask) {
    PYATTN_CHECK_DIM(*global_attention_mask, "global_attention_mask", 2,
                     "(B, N)");
  }
  // 2. sizes
  p.B = local_attn.size(0);
  p.H = local_attn.size(1);
  p.N = local_attn.size(2);
  p.X = has_global ? global_attn->size(3) : 0;
  const int64_t D = local_attn.size(3);
  p.w = D - p.X - 1;
  TORCH_CHECK(p.w >= 2 && p.w % 2 == 0,
              "local_attn's last dimension must be X + w + 1 for an even "
              "window w >= 2, with X = ", p.X,
              " global slots (global_attn.size(3)); got last dimension ", D,
              " (local_attn shape ", local_attn.sizes(), "), which leaves w = ",
              p.w);
  if (has_global) {
    PYATTN_CHECK_SIZE(*global_attn, "global_attn", 0, p.B, "batch B");
    PYATTN_CHECK_SIZE(*global_attn, "global_attn", 1, p.H, "heads H");
    TORCH_CHECK(global_attn->size(2) >= p.N, "global_attn has shape ",
                global_attn->sizes(), " but its dimension 2 (N_pad) must be "
                "at least N = ", p.N, ", the sequence length of local_attn");
  }
  if (has_mask) {
    PYATTN_CHECK_SIZE(*global_attention_mask, "global_attention_mask", 0, p.B,
                      "batch B");
    PYATTN_CHECK_SIZE(*global_attention_mask, "global_attention_mask", 1, p.N,
                      "sequence length N");
  } else {
    TORCH_CHECK(p.X == 0, "global_attention_mask is required when "
                "global_attn has X = ", p.X, " global slots (shape ",
                global_attn->sizes(), "): it says which positions are global");
  }
  if (head_weights.has_value() && head_weights->defined()) {
    TORCH_CHECK(head_weights->dim() == 1 && head_weights->size(0) == p.H,
                "head_weights must have shape (H,) = (", p.H,
                ",) to match local_attn's heads, got shape ",
                head_weights->sizes());
  }
  if (row_weights.has_value() && row_weights->defined()) {
    TORCH_CHECK(row_weights->dim() == 2 && row_weights->size(0) == p.B &&
                    row_weights->size(1) == p.N,
                "row_weights must have shape (B, N) = (", p.B, ", ", p.N,
                ") to match local_attn, got shape ", row_weights->sizes());
  }
  // 3. dtypes
  PYATTN_CHECK_FLOATING(local_attn, "local_attn");
  if (has_global) {
    TORCH_CHECK(global_attn->scalar_type() == local_attn.scalar_type(),
                "global_attn has dtype ", global_attn->scalar_type(),
                " but local_attn has ", local_attn.scalar_type(),
                "; they must match");
  }
  if (has_mask) {
    const auto mt = global_attention_mask->scalar_type();
    TORCH_CHECK(mt == at::kBool || at::isIntegralType(mt, /*includeBool=*/true),
                "global_attention_mask must be bool or integer (1 = global), "
                "got ", mt);
  }
  if (head_weights.has_value() && head_weights->defined()) {
    PYATTN_CHECK_FLOATING(*head_weights, "head_weights");
  }
  if (row_weights.has_value() && row_weights->defined()) {
    PYATTN_CHECK_FLOATING(*row_weights, "row_weights");
  }
  // 4. devices
  if (has_global) PYATTN_CHECK_SAME_DEVICE(*global_attn, "global_attn", local_attn);
  if (has_mask) {
    PYATTN_CHECK_SAME_DEVICE(*global_attention_mask, "global_attention_mask",
                             local_attn);
  }
  if (head_weights.has_value() && head_weights->defined()) {
    PYATTN_CHECK_SAME_DEVICE(*head_weights, "head_weights", local_attn);
  }
  if (row_weights.has_value() && row_weights->defined()) {
    PYATTN_CHECK_SAME_DEVICE(*row_weights, "row_weights", local_attn);
  }

  // The global-token tables: slot_of[b, i] = m for the m-th global position of
  // item b (ascending), else -1; global_pos[b, m] = that position, else -1.
  // Built with tensor ops only (no host synchronisation on CUDA). Positions
  // past X are left out of the tables, so that even a mask refused by the
  // asynchronous device-side check below never makes a kernel read out of
  // bounds.
  const auto opts = local_attn.options().dtype(at::kLong);
  p.local = local_attn;
  if (has_global && p.X > 0) p.global = *global_attn;
  if (has_mask && p.B > 0 && p.N > 0) {
    const at::Tensor is_global = global_attention_mask->ne(0);
    const at::Tensor slot = is_global.cumsum(1) - 1;
    const at::Tensor in_table = is_global.logical_and(slot.lt(p.X));
    p.slot_of = at::where(in_table, slot, at::full({}, -1, opts)).contiguous();
    // Scatter position i into column slot[i]; other positions go to a spare
    // column X, dropped afterwards.
    at::Tensor pos = at::full({p.B, p.X + 1}, -1, opts);
    const at::Tensor target = at::where(in_table, slot, at::full({}, p.X, opts));
    pos.scatter_(1, target, at::arange(p.N, opts).expand({p.B, p.N}));
    p.global_pos = pos.narrow(1, 0, p.X).contiguous();
    check_mask_agrees(local_attn, global_attn, is_global, p);
  } else {
    p.slot_of = at::full({p.B, p.N}, -1, opts);
    p.global_pos = at::full({p.B, p.X}, -1, opts);
  }
  const auto acc_type = at::toOpMathType(local_attn.scalar_type());
  if (head_weights.has_value() && head_weights->defined()) {
    p.head_weights = head_weights->to(acc_type).contiguous();
  }
  if (row_weights.has_value() && row_weights->defined()) {
    p.row_weights = row_weights->to(acc_type).contiguous();
  }
  return p;
}

template <typename scalar_t, typename acc_t>
BandParams<scalar_t, acc_t> band_params(const Prepared& p) {
  BandParams<scalar_t, acc_t> r{};
  r.local = p.local.const_data_ptr<scalar_t>();
  r.ls_b = p.local.stride(0);
  r.ls_h = p.local.stride(1);
  r.ls_i = p.local.stride(2);
  r.ls_k = p.local.stride(3);
  if (p.global.defined()) {
    r.global = p.global.const_data_ptr<scalar_t>();
    r.gs_b = p.global.stride(0);
    r.gs_h = p.global.stride(1);
    r.gs_j = p.global.stride(2);
    r.gs_m = p.global.stride(3);
  }
  r.slot_of = p.slot_of.const_data_ptr<int64_t>();
  r.global_pos = p.global_pos.const_data_ptr<int64_t>();
  r.head_weights = p.head_weights.defined()
                       ? p.head_weights.const_data_ptr<acc_t>()
                       : nullptr;
  r.fused = p.head_weights.defined();
  r.row_weights = p.row_weights.defined()
                      ? p.row_weights.const_data_ptr<acc_t>()
                      : nullptr;
  r.B = p.B;
  r.H = p.H;
  r.N = p.N;
  r.X = p.X;
  r.w = p.w;
  r.hw = p.w / 2;
  return r;
}

// attention_received's zeroed accumulator: (B, H, N), or (B, N) with head
// weights, in the accumulation type (float for half/bfloat16/float).
// The dtype attention_received returns: out_dtype when given, else float32
// for half and bfloat16 inputs (a column sum over N rows overflows float16 at
// the CLS column for N of a few thousand), else the input's dtype.
inline at::ScalarType received_out_dtype(const at::Tensor& local_attn,
                                         std::optional<at::ScalarType> out_dtype) {
  if (out_dtype.has_value()) {
    TORCH_CHECK(at::isFloatingType(*out_dtype),
                "out_dtype must be float16, bfloat16, float32 or float64, got ",
                *out_dtype);
    return *out_dtype;
  }
  const auto t = local_attn.scalar_type();
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

inline at::Tensor received_accumulator(const Prepared& p) {
  const auto acc_type = at::toOpMathType(p.local.scalar_type());
  const auto options = p.local.options().dtype(acc_type);
  if (p.head_weights.defined()) return at::zeros({p.B, p.N}, options);
  return at::zeros({p.B, p.H, p.N}, options);
}

// Every backend's entry point of attention_received: the arguments checked
// and prepared, the accumulator made and, unless it is empty, launch(prep, p,
// out) run with the band's parameters p for the input dtype
// (BandParams<scalar_t, acc_t>) and the accumulator's data out (acc_t*, the
// accumulation type); then the accumulator in the dtype the op returns.
template <typename Launch>
at::Tensor received_with(PYATTN_BAND_PARAMS, std::optional<at::ScalarType> out_dtype,
                         Launch&& launch) {
  const Prepared prep = prepare(PYATTN_BAND_ARGS);
  at::Tensor acc = received_accumulator(prep);
  if (acc.numel() != 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, local_attn.scalar_type(), "attention_received", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          launch(prep, band_params<scalar_t, acc_t>(prep), acc.mutable_data_ptr<acc_t>());
        });
  }
  return acc.to(received_out_dtype(local_attn, out_dtype));
}

// Every backend's entry point of band_to_dense: the arguments checked and
// prepared, the (B, H, N, N) output made and, unless it is empty,
// launch(prep, p, out) run with p as in received_with and the output's data
// out (scalar_t*, the input dtype).
template <typename Launch>
at::Tensor dense_with(const at::Tensor& local_attn, const std::optional<at::Tensor>& global_attn,
                      const std::optional<at::Tensor>& global_attention_mask, Launch&& launch) {
  const Prepared prep = prepare(local_attn, global_attn, global_attention_mask, std::nullopt,
                                std::nullopt);
  at::Tensor out = at::empty({prep.B, prep.H, prep.N, prep.N}, local_attn.options());
  if (out.numel() != 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, local_attn.scalar_type(), "band_to_dense", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          launch(prep, band_params<scalar_t, acc_t>(prep), out.mutable_data_ptr<scalar_t>());
        });
  }
  return out;
}

}  // namespace pyattn
