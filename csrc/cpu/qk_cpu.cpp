// CPU kernel: attention_received_qk (see ../qk_kernels.h for the rules).
//
// Blocked tiles of kQKTile x kQKTile scores, never more than one tile per
// task in memory:
//   pass 1, at::parallel_for over (item, head, row block): each row's
//           log-sum-exp over the column blocks its rows can see;
//   pass 2, at::parallel_for over (item, output head, column block): the task
//           owns its columns and adds, row block by row block in order,
//           w_i exp(s_ij - lse_i); heads (fused: all of them, weighted) in
//           order. No two tasks write one element: deterministic and bitwise
//           repeatable whatever the thread count.
// Scores are float32 dot products of float32 copies of q and k (k transposed
// to (B, Hkv, d, N_pad), zero-padded to whole tiles, so a tile row is 64
// contiguous floats).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "../qk_prepare.h"

namespace pyattn {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define PYATTN_QK_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PYATTN_QK_CLONES
#endif

constexpr int64_t T = kQKTile;

// s[r][c] = scale * q[r] . kT[:, c] for `rows` rows of q (stride d) and the
// kQKTile columns of kT (stride ld between head-size entries).
PYATTN_QK_CLONES void scores_tile(const float* __restrict__ q, int64_t rows,
                                  const float* __restrict__ kT, int64_t ld, int64_t d,
                                  float scale, float* __restrict__ s) {
  for (int64_t r = 0; r < rows; ++r) {
    float acc[T];
    for (int64_t c = 0; c < T; ++c) acc[c] = 0.0f;
    const float* qr = q + r * d;
    for (int64_t x = 0; x < d; ++x) {
      const float a = qr[x];
      const float* kr = kT + x * ld;
#pragma omp simd
      for (int64_t c = 0; c < T; ++c) acc[c] += a * kr[c];
    }
#pragma omp simd
    for (int64_t c = 0; c < T; ++c) s[r * T + c] = acc[c] * scale;
  }
}

// Row statistics of one tile row: max and sum of exp(s - max) over the
// visible entries (vis[c] != 0); (-inf, 0) when none is visible.
PYATTN_QK_CLONES void row_stats(const float* __restrict__ s, const uint8_t* __restrict__ vis,
                                float* m_out, float* l_out) {
  float m = -INFINITY;
  for (int64_t c = 0; c < T; ++c) m = vis[c] && s[c] > m ? s[c] : m;
  float l = 0.0f;
  if (m > -INFINITY) {
#pragma omp simd reduction(+ : l)
    for (int64_t c = 0; c < T; ++c) {
      const float e = qk_exp(s[c] - m);
      l += vis[c] ? e : 0.0f;
    }
  }
  *m_out = m;
  *l_out = l;
}

// col[c] += coef * exp(s[c] - lse) over the visible entries.
PYATTN_QK_CLONES void add_probs(const float* __restrict__ s, const uint8_t* __restrict__ vis,
                                float coef, float lse, float* __restrict__ col) {
#pragma omp simd
  for (int64_t c = 0; c < T; ++c) {
    const float e = coef * qk_exp(s[c] - lse);
    col[c] += vis[c] ? e : 0.0f;
  }
}

// Visibility of one tile row: vis[c] for columns [j0, j0 + T), 0 past N.
inline void row_visibility(const QKParams<float>& p, int64_t b, int64_t i, int64_t j0,
                           uint8_t* vis) {
  const uint8_t* real = p.real + b * p.N;
  const uint8_t* glob = p.global + b * p.N;
  const bool row_real = real[i] != 0, row_glob = glob[i] != 0;
  for (int64_t c = 0; c < T; ++c) {
    const int64_t j = j0 + c;
    vis[c] = j < p.N && qk_visible_flags(p, i, j, row_real, row_glob, real[j] != 0,
                                         glob[j] != 0);
  }
}

void qk_cpu_kernel(const QKParams<float>& p, const float* kT, int64_t ld, float* lse,
                   float* out) {
  const int64_t blocks = p.blocks;
  // Pass 1: lse per row.
  at::parallel_for(0, p.B * p.H * blocks, 1, [&](int64_t begin, int64_t end) {
    float s[T * T];
    uint8_t vis[T];
    float m[T], l[T];
    for (int64_t task = begin; task < end; ++task) {
      const QKBlock blk = qk_block(p, p.H, task);
      const int64_t b = blk.b, h = blk.head, rb = blk.tile;
      const int64_t i0 = rb * T, rows = std::min(T, p.N - i0);
      const float* q = p.q + ((b * p.H + h) * p.N + i0) * p.d;
      const float* kTb = kT + (b * p.Hkv + h / p.group) * p.d * ld;
      for (int64_t r = 0; r < rows; ++r) m[r] = -INFINITY, l[r] = 0.0f;
      for (int64_t cb = 0; cb < blocks; ++cb) {
        if (!qk_tile_needed(p, b, rb, cb)) continue;
        scores_tile(q, rows, kTb + cb * T, ld, p.d, p.scale, s);
        for (int64_t r = 0; r < rows; ++r) {
          row_visibility(p, b, i0 + r, cb * T, vis);
          float mt, lt;
          row_stats(s + r * T, vis, &mt, &lt);
          qk_merge(&m[r], &l[r], mt, lt);
        }
      }
      for (int64_t r = 0; r < rows; ++r) lse[(b * p.H + h) * p.N + i0 + r] = qk_lse(m[r], l[r]);
    }
  });
  // Pass 2: column sums, one owner per column block.
  const int64_t H_out = qk_out_heads(p.head_weights, p.H);
  at::parallel_for(0, p.B * H_out * blocks, 1, [&](int64_t begin, int64_t end) {
    float s[T * T];
    uint8_t vis[T];
    float col[T], total[T];
    for (int64_t task = begin; task < end; ++task) {
      const QKBlock blk = qk_block(p, H_out, task);
      const int64_t b = blk.b, cb = blk.tile;
      const int64_t h_begin = p.head_weights ? 0 : blk.head;
      const int64_t h_end = p.head_weights ? p.H : blk.head + 1;
      for (int64_t c = 0; c < T; ++c) total[c] = 0.0f;
      for (int64_t h = h_begin; h < h_end; ++h) {
        for (int64_t c = 0; c < T; ++c) col[c] = 0.0f;
        const float* kTb = kT + (b * p.Hkv + h / p.group) * p.d * ld + cb * T;
        const float* row_lse = lse + (b * p.H + h) * p.N;
        for (int64_t rb = 0; rb < blocks; ++rb) {
          if (!qk_tile_needed(p, b, rb, cb)) continue;
          const int64_t i0 = rb * T, rows = std::min(T, p.N - i0);
          scores_tile(p.q + ((b * p.H + h) * p.N + i0) * p.d, rows, kTb, ld, p.d, p.scale, s);
          for (int64_t r = 0; r < rows; ++r) {
            const float coef = qk_row_coefficient(p, b, h, i0 + r, row_lse[i0 + r]);
            if (coef == 0.0f) continue;
            row_visibility(p, b, i0 + r, cb * T, vis);
            add_probs(s + r * T, vis, coef, row_lse[i0 + r], col);
          }
        }
        const float wh = p.head_weights ? p.head_weights[h] : 1.0f;
        for (int64_t c = 0; c < T; ++c) total[c] += p.head_weights ? wh * col[c] : col[c];
      }
      float* dst = out + (b * H_out + blk.head) * p.N;
      for (int64_t c = 0; c < T && cb * T + c < p.N; ++c) dst[cb * T + c] = total[c];
    }
  });
}

at::Tensor attention_received_qk_cpu(const at::Tensor& q, const at::Tensor& k, double scale,
                                     const std::optional<at::Tensor>& key_mask,
                                     int64_t window_left, int64_t window_right, bool causal,
                                     const std::optional<at::Tensor>& global_mask,
                                     const std::optional<at::Tensor>& head_weights,
                                     const std::optional<at::Tensor>& row_weights) {
  const QKPrepared prep = qk_prepare(q, k, scale, key_mask, window_left, window_right,
                                     causal, global_mask, head_weights, row_weights);
  at::Tensor out = qk_output(prep);
  if (out.numel() == 0 || prep.H == 0) return out;
  const at::Tensor qf = prep.q.to(at::kFloat).contiguous();
  const int64_t ld = prep.blocks * T;
  at::Tensor kT = at::zeros({prep.B, prep.Hkv, prep.d, ld}, qf.options());
  kT.narrow(3, 0, prep.N).copy_(prep.k.transpose(2, 3));
  at::Tensor lse = at::empty({prep.B, prep.H, prep.N}, qf.options());
  const QKParams<float> p = qk_params<float>(prep, qf.const_data_ptr<float>(), nullptr);
  qk_cpu_kernel(p, kT.const_data_ptr<float>(), ld, lse.mutable_data_ptr<float>(),
                out.mutable_data_ptr<float>());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) {
  m.impl("attention_received_qk", &attention_received_qk_cpu);
}

}  // namespace pyattn
