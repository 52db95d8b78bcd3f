// CPU kernel: attention_received_qk (see ../qk_kernels.h for the rules).
//
// Scores come in tiles computed by a real matrix product (at::mm_out on
// float32 blocks, i.e. BLAS, which runs single-threaded on at::parallel_for's
// threads), never more than one tile per task in memory:
//   pass 1, at::parallel_for over (item, head, row block of kRows rows): each
//           row's log-sum-exp, merged online over column chunks of at most
//           kCols columns;
//   pass 2, at::parallel_for over (item, output head, column block of kCols
//           columns): the task owns its columns and adds, row by row in
//           order, w_i exp(s_ij - lse_i); heads (fused: all of them,
//           weighted) in order. No two tasks write one element, and each
//           task's summation order is fixed by the shapes alone: deterministic
//           and bitwise repeatable whatever the thread count.
// Chunks are runs of the shared kQKTile x kQKTile tiles that qk_tile_needed
// keeps (a chunk covers whole tiles, so nothing is computed that the tile
// rule would skip, up to the tile granularity). The visibility mask is applied
// only to chunks that the window / causal / padding rules cut through;
// masked scores are -inf, which cpu_exp maps to 0. The exp and the
// column sums run on 16-float vectors (GCC vector extension).
// q (times scale) and k are read as float32 copies; half inputs are converted
// first.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../qk_prepare.h"

namespace pyattn {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define PYATTN_QK_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYATTN_QK_CLONES
#endif

constexpr int64_t T = kQKTile;
constexpr int64_t kRows = 2 * kQKTile;  // pass-1 task rows; pass-2 row chunk
constexpr int64_t kCols = 4 * kQKTile;  // pass-2 task columns; pass-1 column chunk
static_assert(kRows % kQKTile == 0 && kCols % kQKTile == 0, "chunks cover whole tiles");

// 16 floats (GCC vector extension): one zmm register in the x86-64-v4 clone,
// two ymm in v3, four xmm in the default; the same operations and summation
// order in every clone (the v3 / v4 clones may fuse multiply-adds, so their
// last bits can differ from the default's: one machine always runs one clone).
#pragma GCC diagnostic ignored "-Wpsabi"  // F16 in inlined helpers (below)
typedef float F16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

// The helpers on F16 must be inlined into each clone: an out-of-line copy
// would be compiled for the default target, whose way of passing 64-byte
// vectors differs from the AVX-512 clone's.
#define PYATTN_QK_INLINE inline __attribute__((always_inline))

template <typename V>
PYATTN_QK_INLINE V splat(float v) {
  if constexpr (std::is_same_v<V, float>) {
    return v;
  } else {
    return V{} + v;
  }
}

PYATTN_QK_INLINE F16 load16(const float* p) {
  F16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

PYATTN_QK_INLINE void store16(float* p, F16 v) { std::memcpy(p, &v, sizeof(v)); }

// exp for the CPU loops, lane-wise on float or F16 (I: the matching int32
// type): qk_exp's polynomial without branches (clamps and the final choice as
// selects, rounding to nearest by adding 1.5 * 2^23, n read from the sum's low
// bits). Within 1e-7 relative of exp over [-87, 88]; 0 below -87 and for -inf.
template <typename F, typename I>
PYATTN_QK_INLINE F cpu_exp(F x) {
  const F lo = splat<F>(-87.0f), hi = splat<F>(88.0f), magic = splat<F>(12582912.0f);
  const F xc = x < lo ? lo : (x > hi ? hi : x);
  const F rounded = xc * 1.44269504088896341f + magic;
  const I n = std::bit_cast<I>(rounded) - 0x4B400000;
  const F fn = rounded - magic;
  const F v = qk_exp_reduced(xc, fn) * std::bit_cast<F>((n + 127) << 23);
  return x < lo ? splat<F>(0.0f) : v;
}

// Row i's visible keys among [j0, j0 + n): s[c] = -inf where row i does not
// see key j0 + c. The same rule as qk_visible_flags (row real, and row
// global, key global or the window / causal range), written with the range
// [lo, hi] of the local rule so that it vectorises.
PYATTN_QK_CLONES void mask_row(const uint8_t* __restrict__ real, const uint8_t* __restrict__ glob,
                               bool row_global, int64_t lo, int64_t hi, int64_t j0, int64_t n,
                               float* __restrict__ s) {
  const uint8_t* rc = real + j0;
  const uint8_t* gc = glob + j0;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const int64_t j = j0 + c;
    const int local = (j >= lo) & (j <= hi);
    const int vis = (rc[c] != 0) & (static_cast<int>(row_global) | (gc[c] != 0) | local);
    s[c] = vis ? s[c] : -INFINITY;
  }
}

// Max and sum of exp(s - max) over n scores (-inf: masked); (-inf, 0) when
// every score is masked. The sum in a fixed order: 16 lane sums, added lane
// by lane, then the tail.
PYATTN_QK_CLONES void row_stats(const float* __restrict__ s, int64_t n, float* m_out,
                                float* l_out) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < n; ++c) m = s[c] > m ? s[c] : m;
  float l = 0.0f;
  if (m > -INFINITY) {
    const int64_t whole = n - n % kLanes;
    F16 acc = splat<F16>(0.0f);
    const F16 mv = splat<F16>(m);
    for (int64_t c = 0; c < whole; c += kLanes) acc += cpu_exp<F16, I16>(load16(s + c) - mv);
    for (int64_t x = 0; x < kLanes; ++x) l += acc[x];
    for (int64_t c = whole; c < n; ++c) l += cpu_exp<float, int32_t>(s[c] - m);
  }
  *m_out = m;
  *l_out = l;
}

// col[c] += coef * exp(s[c] - lse) over n scores (-inf: masked, adds 0).
PYATTN_QK_CLONES void add_probs(const float* __restrict__ s, int64_t n, float coef, float lse,
                                float* __restrict__ col) {
  const int64_t whole = n - n % kLanes;
  const F16 lv = splat<F16>(lse);
  for (int64_t c = 0; c < whole; c += kLanes)
    store16(col + c, load16(col + c) + coef * cpu_exp<F16, I16>(load16(s + c) - lv));
  for (int64_t c = whole; c < n; ++c) col[c] += coef * cpu_exp<float, int32_t>(s[c] - lse);
}

// Per-call tables and views of the CPU kernel.
struct QKCpu {
  QKParams<float> p;
  at::Tensor q, k;                 // (B, H, N, d) scale * q, (B, Hkv, N, d): float32
  std::vector<int64_t> real_sum;   // (B, N + 1): prefix counts of real tokens
};

bool all_real(const QKCpu& c, int64_t b, int64_t i0, int64_t n) {
  const int64_t* sum = c.real_sum.data() + b * (c.p.N + 1);
  return sum[i0 + n] - sum[i0] == n;
}

// Whether every row of [i0, i0 + rows) sees every key of [j0, j0 + cols):
// all real and inside the window / causal range (then globals change nothing).
bool chunk_fully_visible(const QKCpu& c, int64_t b, int64_t i0, int64_t rows, int64_t j0,
                         int64_t cols) {
  const QKParams<float>& p = c.p;
  const int64_t i1 = i0 + rows - 1, j1 = j0 + cols - 1;
  if (p.left >= 0 && j0 < i1 - p.left) return false;
  if (p.right >= 0 && j1 > i0 + p.right) return false;
  if (p.causal && j1 > i0) return false;
  return all_real(c, b, i0, rows) && all_real(c, b, j0, cols);
}

// Mask the rows x cols chunk s (row stride cols) of rows [i0, ..) and keys
// [j0, ..) unless every entry is visible.
void mask_chunk(const QKCpu& c, int64_t b, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                float* s) {
  if (chunk_fully_visible(c, b, i0, rows, j0, cols)) return;
  const QKParams<float>& p = c.p;
  const uint8_t* real = p.real + b * p.N;
  const uint8_t* glob = p.global + b * p.N;
  constexpr int64_t none_lo = std::numeric_limits<int64_t>::min();
  constexpr int64_t none_hi = std::numeric_limits<int64_t>::max();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    float* row = s + r * cols;
    if (!real[i]) {
      std::fill(row, row + cols, -INFINITY);
      continue;
    }
    const int64_t lo = p.left >= 0 ? i - p.left : none_lo;
    int64_t hi = p.right >= 0 ? i + p.right : none_hi;
    if (p.causal && hi > i) hi = i;
    mask_row(real, glob, glob[i] != 0, lo, hi, j0, cols, row);
  }
}

// s (rows x cols, row-major) = q[b, h, i0 : i0 + rows] @ k[b, h / group, j0 : j0 + cols]^T
// (q already scaled), masked (-inf where a row does not see a key); returns s.
float* masked_scores(const QKCpu& c, int64_t b, int64_t h, int64_t i0, int64_t rows, int64_t j0,
                     int64_t cols, at::Tensor& s_buf) {
  const QKParams<float>& p = c.p;
  const auto opts = c.q.options();
  const float* qp = c.q.const_data_ptr<float>() + ((b * p.H + h) * p.N + i0) * p.d;
  const float* kp = c.k.const_data_ptr<float>() + ((b * p.Hkv + h / p.group) * p.N + j0) * p.d;
  const at::Tensor qt = at::from_blob(const_cast<float*>(qp), {rows, p.d}, {p.d, 1}, opts);
  const at::Tensor kt = at::from_blob(const_cast<float*>(kp), {cols, p.d}, {p.d, 1}, opts);
  at::Tensor out = at::from_blob(s_buf.mutable_data_ptr<float>(), {rows, cols}, {cols, 1}, opts);
  at::mm_out(out, qt, kt.t());
  float* s = s_buf.mutable_data_ptr<float>();
  mask_chunk(c, b, i0, rows, j0, cols, s);
  return s;
}

// Runs of needed tiles: for the tile blocks `needed` (1 = some tile of the
// run's other side needs it), call f(first block, block count) for each run
// of consecutive needed blocks, at most `most` blocks per call, in order.
template <typename F>
void for_each_run(const std::vector<uint8_t>& needed, int64_t most, const F& f) {
  const int64_t n = static_cast<int64_t>(needed.size());
  for (int64_t x = 0; x < n;) {
    if (!needed[x]) {
      ++x;
      continue;
    }
    const int64_t start = x;
    while (x < n && needed[x] && x - start < most) ++x;
    f(start, x - start);
  }
}

// needed[x] for every block x: whether the tile of x with any block of
// [begin, end) is needed; x is a column block and [begin, end) row blocks
// when `rows_given`, and the other way round otherwise.
void mark_needed(const QKParams<float>& p, int64_t b, int64_t begin, int64_t end, bool rows_given,
                 std::vector<uint8_t>& needed) {
  for (int64_t x = 0; x < p.blocks; ++x) {
    bool any = false;
    for (int64_t y = begin; y < end && !any; ++y)
      any = rows_given ? qk_tile_needed(p, b, y, x) : qk_tile_needed(p, b, x, y);
    needed[x] = any;
  }
}

void qk_cpu_kernel(const QKCpu& c, float* lse, float* out) {
  const QKParams<float>& p = c.p;
  const int64_t blocks = p.blocks;
  const int64_t row_tasks = (p.N + kRows - 1) / kRows;
  const int64_t col_tasks = (p.N + kCols - 1) / kCols;
  const int64_t per_row = kRows / T, per_col = kCols / T;

  // Pass 1: lse per row.
  at::parallel_for(0, p.B * p.H * row_tasks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor s_buf = at::empty({kRows * kCols}, c.q.options());
    std::vector<uint8_t> needed(blocks);
    float m[kRows], l[kRows];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t rt = task % row_tasks, h = (task / row_tasks) % p.H,
                    b = task / (row_tasks * p.H);
      const int64_t i0 = rt * kRows, rows = std::min(kRows, p.N - i0);
      mark_needed(p, b, rt * per_row, std::min(blocks, (rt + 1) * per_row), true, needed);
      for (int64_t r = 0; r < rows; ++r) m[r] = -INFINITY, l[r] = 0.0f;
      for_each_run(needed, per_col, [&](int64_t cb, int64_t count) {
        const int64_t j0 = cb * T, cols = std::min((cb + count) * T, p.N) - j0;
        float* s = masked_scores(c, b, h, i0, rows, j0, cols, s_buf);
        for (int64_t r = 0; r < rows; ++r) {
          float mt, lt;
          row_stats(s + r * cols, cols, &mt, &lt);
          qk_merge(&m[r], &l[r], mt, lt);
        }
      });
      for (int64_t r = 0; r < rows; ++r) lse[(b * p.H + h) * p.N + i0 + r] = qk_lse(m[r], l[r]);
    }
  });

  // Pass 2: column sums, one owner per column block.
  const int64_t H_out = qk_out_heads(p.head_weights, p.H);
  at::parallel_for(0, p.B * H_out * col_tasks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor s_buf = at::empty({kRows * kCols}, c.q.options());
    std::vector<uint8_t> needed(blocks);
    float col[kCols], total[kCols];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t ct = task % col_tasks, head = (task / col_tasks) % H_out,
                    b = task / (col_tasks * H_out);
      const int64_t j0 = ct * kCols, cols = std::min(kCols, p.N - j0);
      mark_needed(p, b, ct * per_col, std::min(blocks, (ct + 1) * per_col), false, needed);
      const int64_t h_begin = p.head_weights ? 0 : head;
      const int64_t h_end = p.head_weights ? p.H : head + 1;
      std::fill(total, total + cols, 0.0f);
      for (int64_t h = h_begin; h < h_end; ++h) {
        std::fill(col, col + cols, 0.0f);
        const float* row_lse = lse + (b * p.H + h) * p.N;
        for_each_run(needed, per_row, [&](int64_t rb, int64_t count) {
          const int64_t i0 = rb * T, rows = std::min((rb + count) * T, p.N) - i0;
          float* s = masked_scores(c, b, h, i0, rows, j0, cols, s_buf);
          for (int64_t r = 0; r < rows; ++r) {
            const float coef = qk_row_coefficient(p, b, h, i0 + r, row_lse[i0 + r]);
            if (coef == 0.0f) continue;
            add_probs(s + r * cols, cols, coef, row_lse[i0 + r], col);
          }
        });
        const float wh = p.head_weights ? p.head_weights[h] : 1.0f;
        for (int64_t x = 0; x < cols; ++x) total[x] += p.head_weights ? wh * col[x] : col[x];
      }
      std::copy(total, total + cols, out + (b * H_out + head) * p.N + j0);
    }
  });
}

at::Tensor attention_received_qk_cpu(PYATTN_QK_PARAMS) {
  return qk_received(PYATTN_QK_ARGS, [](const QKPrepared& prep, at::Tensor& out) {
    QKCpu c;
    // scale folded into the float32 copy of q (a new tensor: the caller's q is
    // never written).
    c.q = prep.q.to(at::kFloat).mul(static_cast<float>(prep.scale)).contiguous();
    c.k = prep.k.to(at::kFloat).contiguous();
    c.p = qk_params<float>(prep, c.q.const_data_ptr<float>(), c.k.const_data_ptr<float>());
    c.p.scale = 1.0f;
    const uint8_t* real = c.p.real;
    c.real_sum.assign(prep.B * (prep.N + 1), 0);
    for (int64_t b = 0; b < prep.B; ++b) {
      int64_t* sum = c.real_sum.data() + b * (prep.N + 1);
      for (int64_t i = 0; i < prep.N; ++i) sum[i + 1] = sum[i] + (real[b * prep.N + i] != 0);
    }
    at::Tensor lse = at::empty({prep.B, prep.H, prep.N}, c.q.options());
    qk_cpu_kernel(c, lse.mutable_data_ptr<float>(), out.mutable_data_ptr<float>());
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) {
  m.impl("attention_received_qk", &attention_received_qk_cpu);
}

}  // namespace pyattn
