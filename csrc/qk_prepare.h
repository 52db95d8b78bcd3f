// attention_received_qk: validation of the arguments and the tables the
// kernels read (real / global flags, per-tile-block global flags), shared by
// the CPU and CUDA kernels and the test-only host emulator. Host code on ATen
// only; the tables are built with device-agnostic tensor ops (no host
// synchronisation). The checks and their messages are those of
// pyattn/kernels/ops.py's _check_qk_inputs, in the same order.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include "checks.h"
#include "qk_kernels.h"

namespace pyattn {

struct QKPrepared {
  at::Tensor q, k;                 // contiguous, in their dtype
  at::Tensor real, global;         // (B, N) uint8
  at::Tensor block_global;         // (B, blocks) uint8
  at::Tensor head_weights;         // (H,) float32, or undefined
  at::Tensor row_weights;          // (B, N) or (B, H, N) float32, or undefined
  double scale = 1.0;
  int64_t left = -1, right = -1;
  bool causal = false;
  int64_t B = 0, H = 0, Hkv = 1, N = 0, d = 0, blocks = 0;
};

inline bool qk_is_input_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

// The op's arguments in its schema's order (csrc/pyattn.cpp), as qk_prepare
// and every backend's entry point (CPU, CUDA, the host emulator) take them.
#define PYATTN_QK_PARAMS                                                              \
  const at::Tensor &q, const at::Tensor &k, double scale,                             \
      const std::optional<at::Tensor> &key_mask, int64_t window_left,                 \
      int64_t window_right, bool causal, const std::optional<at::Tensor> &global_mask, \
      const std::optional<at::Tensor> &head_weights,                                   \
      const std::optional<at::Tensor> &row_weights
#define PYATTN_QK_ARGS \
  q, k, scale, key_mask, window_left, window_right, causal, global_mask, head_weights, row_weights

inline QKPrepared qk_prepare(PYATTN_QK_PARAMS) {
  TORCH_CHECK(std::isfinite(scale), "scale must be a finite float, got ", scale);
  PYATTN_CHECK_DIM(q, "q", 4, "(B, H, N, d)");
  PYATTN_CHECK_DIM(k, "k", 4, "(B, Hkv, N, d)");
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
  PYATTN_CHECK_SIZE_AS(k, "k", 0, B, "batch B", "q");
  PYATTN_CHECK_SIZE_AS(k, "k", 2, N, "sequence length N", "q");
  PYATTN_CHECK_SIZE_AS(k, "k", 3, d, "head size d", "q");
  const int64_t Hkv = k.size(1);
  TORCH_CHECK(Hkv != 0 && H % Hkv == 0, "k has ", Hkv, " heads but q's ", H,
              " heads must be a multiple of them (grouped-query attention), k shape ",
              k.sizes());
  const bool has_key_mask = key_mask.has_value() && key_mask->defined();
  const bool has_global = global_mask.has_value() && global_mask->defined();
  const bool has_heads = head_weights.has_value() && head_weights->defined();
  const bool has_rows = row_weights.has_value() && row_weights->defined();
  if (has_key_mask)
    TORCH_CHECK(key_mask->dim() == 2 && key_mask->size(0) == B && key_mask->size(1) == N,
                "key_mask must have shape (B, N) = (", B, ", ", N,
                ") to match q, got shape ", key_mask->sizes());
  if (has_global)
    TORCH_CHECK(global_mask->dim() == 2 && global_mask->size(0) == B &&
                    global_mask->size(1) == N,
                "global_mask must have shape (B, N) = (", B, ", ", N,
                ") to match q, got shape ", global_mask->sizes());
  if (has_heads)
    TORCH_CHECK(head_weights->dim() == 1 && head_weights->size(0) == H,
                "head_weights must have shape (H,) = (", H,
                ",) to match q's heads, got shape ", head_weights->sizes());
  if (has_rows) {
    const auto s = row_weights->sizes();
    const bool ok = (s.size() == 2 && s[0] == B && s[1] == N) ||
                    (s.size() == 3 && s[0] == B && s[1] == H && s[2] == N);
    TORCH_CHECK(ok, "row_weights must have shape (B, N) = (", B, ", ", N,
                ") or (B, H, N) = (", B, ", ", H, ", ", N,
                ") to match q, got shape ", s);
  }
  TORCH_CHECK(qk_is_input_dtype(q.scalar_type()),
              "q must be float32, float16 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), "k has dtype ", k.scalar_type(),
              " but q has ", q.scalar_type(), "; they must match");
  for (const auto& [name, mask] :
       {std::pair<const char*, const std::optional<at::Tensor>*>{"key_mask", &key_mask},
        {"global_mask", &global_mask}}) {
    if (!(mask->has_value() && (*mask)->defined())) continue;
    TORCH_CHECK(!at::isFloatingType((**mask).scalar_type()) &&
                    !at::isComplexType((**mask).scalar_type()),
                name, " must be bool or integer (nonzero = set), got ",
                (**mask).scalar_type());
  }
  if (has_heads) PYATTN_CHECK_FLOATING(*head_weights, "head_weights");
  if (has_rows) PYATTN_CHECK_FLOATING(*row_weights, "row_weights");
  PYATTN_CHECK_DEVICE_AS(k, "k", q, "q");
  if (has_key_mask) PYATTN_CHECK_DEVICE_AS(*key_mask, "key_mask", q, "q");
  if (has_global) PYATTN_CHECK_DEVICE_AS(*global_mask, "global_mask", q, "q");
  if (has_heads) PYATTN_CHECK_DEVICE_AS(*head_weights, "head_weights", q, "q");
  if (has_rows) PYATTN_CHECK_DEVICE_AS(*row_weights, "row_weights", q, "q");

  QKPrepared p;
  p.B = B, p.H = H, p.Hkv = Hkv, p.N = N, p.d = d;
  p.blocks = qk_blocks(N);
  p.scale = scale, p.left = window_left, p.right = window_right, p.causal = causal;
  p.q = q.contiguous();
  p.k = k.contiguous();
  const auto bytes = q.options().dtype(at::kByte);
  at::Tensor real = has_key_mask ? key_mask->ne(0) : at::ones({B, N}, bytes).to(at::kBool);
  at::Tensor glob = has_global ? global_mask->ne(0).logical_and(real) : at::zeros({B, N}, bytes).to(at::kBool);
  p.real = real.to(at::kByte).contiguous();
  p.global = glob.to(at::kByte).contiguous();
  const int64_t pad = p.blocks * kQKTile - N;
  p.block_global = at::constant_pad_nd(p.global, {0, pad}, 0)
                       .view({B, p.blocks, kQKTile})
                       .amax(2)
                       .contiguous();
  if (has_heads) p.head_weights = head_weights->to(at::kFloat).contiguous();
  if (has_rows) p.row_weights = row_weights->to(at::kFloat).contiguous();
  return p;
}

// The raw view the kernels read; `q` and `k` point at data of type scalar_t
// (the CPU kernel passes its float32 copies).
template <typename scalar_t>
QKParams<scalar_t> qk_params(const QKPrepared& prep, const scalar_t* q, const scalar_t* k) {
  QKParams<scalar_t> p;
  p.q = q;
  p.k = k;
  p.real = prep.real.const_data_ptr<uint8_t>();
  p.global = prep.global.const_data_ptr<uint8_t>();
  p.block_global = prep.block_global.const_data_ptr<uint8_t>();
  p.head_weights = prep.head_weights.defined() ? prep.head_weights.const_data_ptr<float>() : nullptr;
  p.row_weights = prep.row_weights.defined() ? prep.row_weights.const_data_ptr<float>() : nullptr;
  p.rw_sb = prep.row_weights.defined() && prep.row_weights.dim() == 3 ? prep.H * prep.N : prep.N;
  p.rw_sh = prep.row_weights.defined() && prep.row_weights.dim() == 3 ? prep.N : 0;
  p.scale = static_cast<float>(prep.scale);
  p.left = prep.left, p.right = prep.right, p.causal = prep.causal;
  p.B = prep.B, p.H = prep.H, p.Hkv = prep.Hkv, p.N = prep.N, p.d = prep.d;
  p.group = prep.Hkv > 0 ? prep.H / prep.Hkv : 1;
  p.blocks = prep.blocks;
  return p;
}

// The output: (B, H, N), or (B, N) when heads are fused; float32 zeros.
inline at::Tensor qk_output(const QKPrepared& prep) {
  const auto opts = prep.q.options().dtype(at::kFloat);
  return prep.head_weights.defined() ? at::zeros({prep.B, prep.N}, opts)
                                     : at::zeros({prep.B, prep.H, prep.N}, opts);
}

// Every backend's entry point: the arguments checked and prepared, the
// float32 output made, and `launch(prep, out)` run unless there is nothing to
// compute (an empty output, or no heads).
template <typename Launch>
at::Tensor qk_received(PYATTN_QK_PARAMS, Launch&& launch) {
  const QKPrepared prep = qk_prepare(PYATTN_QK_ARGS);
  at::Tensor out = qk_output(prep);
  if (out.numel() != 0 && prep.H != 0) launch(prep, out);
  return out;
}

}  // namespace pyattn
