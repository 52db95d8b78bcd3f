// attention_received_qk: index arithmetic, masking rules and per-thread work
// shared by the CPU kernel (cpu/qk_cpu.cpp), the CUDA kernels
// (cuda/qk_cuda.cu) and the test-only host emulator
// (tests/harness/emulate_cuda.cpp).
//
// For item b, query head h (key head h / group), scores
//   s[i, j] = scale * q[b, h, i] . k[b, h / group, j]
// over the keys row i sees (qk_visible), then
//   pass 1: lse[b, h, i] = log sum_j exp(s[i, j])     (+inf: row sees nothing)
//   pass 2: out[b, h, j] = sum_i w[b, h, i] exp(s[i, j] - lse[b, h, i])
// in tiles of kQKTile x kQKTile; a tile no row of which can see any of its
// keys is skipped (qk_tile_needed). Each output column has one owner: no
// float atomics, a fixed summation order, bitwise repeatable.
//
// Nothing here allocates or touches ATen: plain pointers, so the same code
// runs in a CUDA thread and in g++-compiled host code.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define PYATTN_QK_HD __host__ __device__ __forceinline__
#define PYATTN_QK_HD_ALWAYS __host__ __device__ __forceinline__
#else
#define PYATTN_QK_HD inline
// Always inlined on the host: the CPU kernel calls it on 64-byte vectors from
// target_clones functions, which must not call an out-of-line default copy.
#define PYATTN_QK_HD_ALWAYS inline __attribute__((always_inline))
#endif

namespace pyattn {

constexpr int kQKTile = 64;      // rows and columns of a tile
constexpr int kQKThreads = 256;  // CUDA threads per block: 16 x 16, 4 x 4 scores each
constexpr int kQKChunk = 32;     // head-size slice of q and k staged at a time (CUDA)
constexpr int kQKParts = kQKThreads / kQKTile;  // threads sharing one row / column

// Raw view of one call. `scalar_t` is the dtype q and k are read in (the CPU
// kernel reads float32 copies).
template <typename scalar_t>
struct QKParams {
  const scalar_t* q;             // (B, H, N, d) contiguous
  const scalar_t* k;             // (B, Hkv, N, d) contiguous
  const uint8_t* real;           // (B, N): 1 for a real (unpadded) token
  const uint8_t* global;         // (B, N): 1 for a real global token
  const uint8_t* block_global;   // (B, blocks): tile block holds a global token
  const float* head_weights;     // (H,) or null (per-head output)
  const float* row_weights;      // indexed b * rw_sb + h * rw_sh + i, or null (1)
  int64_t rw_sb, rw_sh;
  float scale;
  int64_t left, right;           // window; < 0 is unlimited
  bool causal;
  int64_t B, H, Hkv, N, d, group, blocks;
};

PYATTN_QK_HD int64_t qk_blocks(int64_t N) { return (N + kQKTile - 1) / kQKTile; }

// The window and causal rule alone (globals and padding aside).
template <typename scalar_t>
PYATTN_QK_HD bool qk_local_visible(const QKParams<scalar_t>& p, int64_t i, int64_t j) {
  if (p.left >= 0 && j < i - p.left) return false;
  if (p.right >= 0 && j > i + p.right) return false;
  if (p.causal && j > i) return false;
  return true;
}

// Row i sees key j, given the flags of row i and column j: both real, and
// either one is global or the window and causal rule allow it.
template <typename scalar_t>
PYATTN_QK_HD bool qk_visible_flags(const QKParams<scalar_t>& p, int64_t i, int64_t j,
                                   bool row_real, bool row_global, bool col_real,
                                   bool col_global) {
  if (!row_real || !col_real) return false;
  return row_global || col_global || qk_local_visible(p, i, j);
}

template <typename scalar_t>
PYATTN_QK_HD bool qk_visible(const QKParams<scalar_t>& p, int64_t b, int64_t i, int64_t j) {
  const uint8_t* real = p.real + b * p.N;
  const uint8_t* glob = p.global + b * p.N;
  return qk_visible_flags(p, i, j, real[i] != 0, glob[i] != 0, real[j] != 0, glob[j] != 0);
}

// Whether any row of row block rb may see any key of column block cb. The
// non-global rows i in [i0, i1] see (at most) keys [lo(i), hi(i)], both
// non-decreasing in i and overlapping from one row to the next, so together
// [lo(i0), hi(i1)]; a block holding a global token is always needed.
template <typename scalar_t>
PYATTN_QK_HD bool qk_tile_needed(const QKParams<scalar_t>& p, int64_t b, int64_t rb,
                                 int64_t cb) {
  if (p.block_global[b * p.blocks + rb] || p.block_global[b * p.blocks + cb]) return true;
  const int64_t i0 = rb * kQKTile;
  const int64_t i1 = (i0 + kQKTile < p.N ? i0 + kQKTile : p.N) - 1;
  const int64_t j0 = cb * kQKTile;
  const int64_t j1 = (j0 + kQKTile < p.N ? j0 + kQKTile : p.N) - 1;
  const int64_t lo = p.left >= 0 ? i0 - p.left : j0;
  int64_t hi = p.right >= 0 ? i1 + p.right : j1;
  if (p.causal && hi > i1) hi = i1;
  return lo <= j1 && hi >= j0;
}

// exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln 2 / 2: exp(r) by the
// Cephes polynomial, r = x - n ln 2 with ln 2 split in two for precision.
// F is float, or a vector of floats (the CPU kernel's cpu_exp); fn is n.
template <typename F>
PYATTN_QK_HD_ALWAYS F qk_exp_reduced(F x, F fn) {
  const F r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
  F y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  return y * r * r + r + 1.0f;
}

// exp for the scores: on the GPU expf; on the host a branch-free Cephes-style
// polynomial (relative error ~2e-7 over [-87, 88]) that compilers vectorise.
PYATTN_QK_HD float qk_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = xc * 1.44269504088896341f;
  const int n = static_cast<int>(t + (t >= 0.0f ? 0.5f : -0.5f));
  const float fn = static_cast<float>(n);
  const float y = qk_exp_reduced(xc, fn);
  const int32_t bits = (n + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return x < -87.0f ? 0.0f : y * two_n;
#endif
}

// Online log-sum-exp: (m, l) = running max and sum of exp(s - m); merge the
// part (m2, l2). m = -inf means nothing seen yet.
PYATTN_QK_HD void qk_merge(float* m, float* l, float m2, float l2) {
  if (l2 == 0.0f) return;
  if (*l == 0.0f) {
    *m = m2;
    *l = l2;
    return;
  }
  if (m2 > *m) {
    *l = *l * qk_exp(*m - m2) + l2;
    *m = m2;
  } else {
    *l = *l + l2 * qk_exp(m2 - *m);
  }
}

// lse of a row from its (m, l); +inf for a row that sees no key, so that
// exp(s - lse) = 0 and the row contributes nothing.
PYATTN_QK_HD float qk_lse(float m, float l) { return l > 0.0f ? m + logf(l) : INFINITY; }

// The weight of row i in the column sums: row_weights (or 1), 0 for a padded
// row and for a row that sees no key (lse = +inf).
template <typename scalar_t>
PYATTN_QK_HD float qk_row_coefficient(const QKParams<scalar_t>& p, int64_t b, int64_t h,
                                      int64_t i, float lse) {
  if (!p.real[b * p.N + i] || !(lse < INFINITY)) return 0.0f;
  return p.row_weights ? p.row_weights[b * p.rw_sb + h * p.rw_sh + i] : 1.0f;
}

// ---------------------------------------------------------------------------
// CUDA work, one function per thread and phase: (params, shared memory,
// block index, thread index, the thread's registers). The kernels in
// cuda/qk_cuda.cu call exactly these with __syncthreads() between phases; the
// host emulator runs each phase for every thread of a block before the next.
//
// Launch shapes: pass 1, grid qk_blocks(N) * B * H blocks (block x = (b, h,
// row block)); pass 2, grid qk_blocks(N) * B * H_out blocks (block x = (b,
// output head, column block)); kQKThreads threads; qk_shared_floats() floats
// of shared memory.
//
// Thread t computes the 4 x 4 scores (rows t / 16 + 16 a, columns t % 16 +
// 16 c) of a tile, the q and k slices staged kQKChunk at a time.

// Shared memory of one block, in floats.
struct QKShared {
  float* qs;        // [kQKTile][kQKChunk + 1]
  float* ks;        // [kQKTile][kQKChunk + 1]
  float* s;         // [kQKTile][kQKTile + 1]: scores (pass 1) / weighted p (pass 2)
  float* row_real;  // [kQKTile] flags as 0 / 1
  float* row_glob;
  float* col_real;
  float* col_glob;
  float* part_a;    // [kQKParts][kQKTile]
  float* part_b;    // [kQKParts][kQKTile]
  float* own_a;     // [kQKTile]: owner's running state (m / column sum)
  float* own_b;     // [kQKTile]: (l / total over heads)
  float* coef;      // [kQKTile]: pass 2 row coefficients
  float* lse;       // [kQKTile]: pass 2 row lse
};

PYATTN_QK_HD int64_t qk_shared_floats() {
  return 2 * kQKTile * (kQKChunk + 1) + kQKTile * (kQKTile + 1) + 4 * kQKTile +
         2 * kQKParts * kQKTile + 4 * kQKTile;
}

PYATTN_QK_HD QKShared qk_shared(float* base) {
  QKShared sh;
  sh.qs = base;
  sh.ks = sh.qs + kQKTile * (kQKChunk + 1);
  sh.s = sh.ks + kQKTile * (kQKChunk + 1);
  sh.row_real = sh.s + kQKTile * (kQKTile + 1);
  sh.row_glob = sh.row_real + kQKTile;
  sh.col_real = sh.row_glob + kQKTile;
  sh.col_glob = sh.col_real + kQKTile;
  sh.part_a = sh.col_glob + kQKTile;
  sh.part_b = sh.part_a + kQKParts * kQKTile;
  sh.own_a = sh.part_b + kQKParts * kQKTile;
  sh.own_b = sh.own_a + kQKTile;
  sh.coef = sh.own_b + kQKTile;
  sh.lse = sh.coef + kQKTile;
  return sh;
}

// A block's coordinates: item b, head (query head in pass 1, output head in
// pass 2) and tile block.
struct QKBlock {
  int64_t b, head, tile;
};

template <typename scalar_t>
PYATTN_QK_HD QKBlock qk_block(const QKParams<scalar_t>& p, int64_t heads, int64_t block_x) {
  QKBlock blk;
  blk.tile = block_x % p.blocks;
  blk.head = (block_x / p.blocks) % heads;
  blk.b = block_x / (p.blocks * heads);
  return blk;
}

// The 4 x 4 scores a thread accumulates.
struct QKAcc {
  float v[4][4];
};

PYATTN_QK_HD void qk_acc_zero(QKAcc* acc) {
  for (int a = 0; a < 4; ++a)
    for (int c = 0; c < 4; ++c) acc->v[a][c] = 0.0f;
}

// Stage the 0/1 flags of the tile's rows (rows = true) or columns.
template <typename scalar_t>
PYATTN_QK_HD void qk_stage_flags(const QKParams<scalar_t>& p, float* real, float* glob,
                                 int64_t b, int64_t tile, int64_t t) {
  if (t >= kQKTile) return;
  const int64_t i = tile * kQKTile + t;
  const bool inside = i < p.N;
  real[t] = inside && p.real[b * p.N + i] ? 1.0f : 0.0f;
  glob[t] = inside && p.global[b * p.N + i] ? 1.0f : 0.0f;
}

// Stage q rows [rb * T, +T) of head h and k rows [cb * T, +T) of key head
// h / group, head-size slice [d0, d0 + kQKChunk); zeros past N and d.
template <typename scalar_t>
PYATTN_QK_HD void qk_load_chunk(const QKParams<scalar_t>& p, const QKShared& sh, int64_t b,
                                int64_t h, int64_t rb, int64_t cb, int64_t d0, int64_t t) {
  const scalar_t* q = p.q + ((b * p.H + h) * p.N) * p.d;
  const scalar_t* k = p.k + ((b * p.Hkv + h / p.group) * p.N) * p.d;
  for (int64_t e = t; e < kQKTile * kQKChunk; e += kQKThreads) {
    const int64_t r = e / kQKChunk;
    const int64_t c = e % kQKChunk;
    const int64_t dc = d0 + c;
    const int64_t i = rb * kQKTile + r;
    const int64_t j = cb * kQKTile + r;
    sh.qs[r * (kQKChunk + 1) + c] =
        (i < p.N && dc < p.d) ? static_cast<float>(q[i * p.d + dc]) : 0.0f;
    sh.ks[r * (kQKChunk + 1) + c] =
        (j < p.N && dc < p.d) ? static_cast<float>(k[j * p.d + dc]) : 0.0f;
  }
}

PYATTN_QK_HD void qk_accumulate_chunk(const QKShared& sh, int64_t t, QKAcc* acc) {
  const int64_t tr = t / 16, tc = t % 16;
  for (int x = 0; x < kQKChunk; ++x) {
    float qv[4], kv[4];
    for (int a = 0; a < 4; ++a) qv[a] = sh.qs[(tr + 16 * a) * (kQKChunk + 1) + x];
    for (int c = 0; c < 4; ++c) kv[c] = sh.ks[(tc + 16 * c) * (kQKChunk + 1) + x];
    for (int a = 0; a < 4; ++a)
      for (int c = 0; c < 4; ++c) acc->v[a][c] += qv[a] * kv[c];
  }
}

// --- Pass 1: row log-sum-exp. ----------------------------------------------

// Start of a pass-1 block: owners' (m, l) empty, row flags staged.
template <typename scalar_t>
PYATTN_QK_HD void qk_rows_init(const QKParams<scalar_t>& p, const QKShared& sh,
                               int64_t block_x, int64_t t) {
  const QKBlock blk = qk_block(p, p.H, block_x);
  qk_stage_flags(p, sh.row_real, sh.row_glob, blk.b, blk.tile, t);
  if (t < kQKTile) {
    sh.own_a[t] = -INFINITY;
    sh.own_b[t] = 0.0f;
  }
}

// Scores of the tile (row block rb, column block cb) into sh.s, -inf where
// the row does not see the key.
// Row r of row block rb sees column col of column block cb (flags staged in sh).
template <typename scalar_t>
PYATTN_QK_HD bool qk_tile_visible(const QKParams<scalar_t>& p, const QKShared& sh, int64_t rb,
                                  int64_t cb, int64_t r, int64_t col) {
  return qk_visible_flags(p, rb * kQKTile + r, cb * kQKTile + col, sh.row_real[r] != 0.0f,
                          sh.row_glob[r] != 0.0f, sh.col_real[col] != 0.0f,
                          sh.col_glob[col] != 0.0f);
}

// Thread t's 4 x 4 scores of the tile (row block rb, column block cb) into
// sh.s, each as value(r, visible, score): r the tile row, visible whether the
// row sees the key.
template <typename scalar_t, typename Value>
PYATTN_QK_HD void qk_store_tile(const QKParams<scalar_t>& p, const QKShared& sh, int64_t rb,
                                int64_t cb, int64_t t, const QKAcc& acc, const Value& value) {
  const int64_t tr = t / 16, tc = t % 16;
  for (int a = 0; a < 4; ++a)
    for (int c = 0; c < 4; ++c) {
      const int64_t r = tr + 16 * a, col = tc + 16 * c;
      sh.s[r * (kQKTile + 1) + col] =
          value(r, qk_tile_visible(p, sh, rb, cb, r, col), acc.v[a][c]);
    }
}

template <typename scalar_t>
PYATTN_QK_HD void qk_store_scores(const QKParams<scalar_t>& p, const QKShared& sh,
                                  int64_t rb, int64_t cb, int64_t t, const QKAcc& acc) {
  qk_store_tile(p, sh, rb, cb, t, acc, [&](int64_t, bool vis, float score) {
    return vis ? score * p.scale : -INFINITY;
  });
}

// Thread t: row t % T, columns [part * 16, +16) with part = t / T: that
// slice's max and sum of exp(s - max).
PYATTN_QK_HD void qk_row_partials(const QKShared& sh, int64_t t) {
  const int64_t r = t % kQKTile, part = t / kQKTile;
  const int64_t width = kQKTile / kQKParts;
  const float* row = sh.s + r * (kQKTile + 1) + part * width;
  float m = -INFINITY;
  for (int64_t c = 0; c < width; ++c) m = row[c] > m ? row[c] : m;
  float l = 0.0f;
  if (m > -INFINITY)
    for (int64_t c = 0; c < width; ++c) l += row[c] > -INFINITY ? qk_exp(row[c] - m) : 0.0f;
  sh.part_a[part * kQKTile + r] = m;
  sh.part_b[part * kQKTile + r] = l;
}

// Owner t < T of row t merges the parts, in order, into its running (m, l).
PYATTN_QK_HD void qk_row_combine(const QKShared& sh, int64_t t) {
  if (t >= kQKTile) return;
  for (int64_t part = 0; part < kQKParts; ++part)
    qk_merge(&sh.own_a[t], &sh.own_b[t], sh.part_a[part * kQKTile + t],
             sh.part_b[part * kQKTile + t]);
}

// End of a pass-1 block: lse[b, h, i] for the block's rows.
template <typename scalar_t>
PYATTN_QK_HD void qk_rows_finish(const QKParams<scalar_t>& p, const QKShared& sh,
                                 float* lse, int64_t block_x, int64_t t) {
  if (t >= kQKTile) return;
  const QKBlock blk = qk_block(p, p.H, block_x);
  const int64_t i = blk.tile * kQKTile + t;
  if (i < p.N) lse[(blk.b * p.H + blk.head) * p.N + i] = qk_lse(sh.own_a[t], sh.own_b[t]);
}

// --- Pass 2: column sums. ----------------------------------------------------

PYATTN_QK_HD int64_t qk_out_heads(const float* head_weights, int64_t H) {
  return head_weights ? 1 : H;
}

// Start of a pass-2 block: column flags staged, the total over heads 0.
template <typename scalar_t>
PYATTN_QK_HD void qk_cols_init(const QKParams<scalar_t>& p, const QKShared& sh,
                               int64_t block_x, int64_t t) {
  const QKBlock blk = qk_block(p, qk_out_heads(p.head_weights, p.H), block_x);
  qk_stage_flags(p, sh.col_real, sh.col_glob, blk.b, blk.tile, t);
  if (t < kQKTile) sh.own_b[t] = 0.0f;
}

// Start of head h: the owner's column sum 0.
PYATTN_QK_HD void qk_cols_head_begin(const QKShared& sh, int64_t t) {
  if (t < kQKTile) sh.own_a[t] = 0.0f;
}

// Stage the rows of row block rb for head h: flags, coefficient, lse.
template <typename scalar_t>
PYATTN_QK_HD void qk_stage_rows(const QKParams<scalar_t>& p, const QKShared& sh,
                                const float* lse, int64_t b, int64_t h, int64_t rb,
                                int64_t t) {
  qk_stage_flags(p, sh.row_real, sh.row_glob, b, rb, t);
  if (t >= kQKTile) return;
  const int64_t i = rb * kQKTile + t;
  const float l = i < p.N ? lse[(b * p.H + h) * p.N + i] : INFINITY;
  sh.lse[t] = l;
  sh.coef[t] = i < p.N ? qk_row_coefficient(p, b, h, i, l) : 0.0f;
}

// Weighted probabilities of the tile into sh.s: coef_i exp(s - lse_i) where
// row i sees key j, else 0.
template <typename scalar_t>
PYATTN_QK_HD void qk_store_probs(const QKParams<scalar_t>& p, const QKShared& sh,
                                 int64_t rb, int64_t cb, int64_t t, const QKAcc& acc) {
  qk_store_tile(p, sh, rb, cb, t, acc, [&](int64_t r, bool vis, float score) {
    const float w = sh.coef[r];
    return (vis && w != 0.0f) ? w * qk_exp(score * p.scale - sh.lse[r]) : 0.0f;
  });
}

// Thread t: column t % T, rows [part * 16, +16) with part = t / T, summed.
PYATTN_QK_HD void qk_col_partials(const QKShared& sh, int64_t t) {
  const int64_t col = t % kQKTile, part = t / kQKTile;
  const int64_t height = kQKTile / kQKParts;
  float sum = 0.0f;
  for (int64_t r = part * height; r < (part + 1) * height; ++r)
    sum += sh.s[r * (kQKTile + 1) + col];
  sh.part_a[part * kQKTile + col] = sum;
}

// Owner t < T of column t adds the parts, in order.
PYATTN_QK_HD void qk_col_combine(const QKShared& sh, int64_t t) {
  if (t >= kQKTile) return;
  float sum = sh.own_a[t];
  for (int64_t part = 0; part < kQKParts; ++part) sum += sh.part_a[part * kQKTile + t];
  sh.own_a[t] = sum;
}

// End of head h: the head's column sum into the total (weighted when heads
// are fused).
template <typename scalar_t>
PYATTN_QK_HD void qk_cols_head_end(const QKParams<scalar_t>& p, const QKShared& sh,
                                   int64_t h, int64_t t) {
  if (t >= kQKTile) return;
  sh.own_b[t] += p.head_weights ? p.head_weights[h] * sh.own_a[t] : sh.own_a[t];
}

template <typename scalar_t>
PYATTN_QK_HD void qk_cols_finish(const QKParams<scalar_t>& p, const QKShared& sh,
                                 float* out, int64_t block_x, int64_t t) {
  if (t >= kQKTile) return;
  const int64_t H_out = qk_out_heads(p.head_weights, p.H);
  const QKBlock blk = qk_block(p, H_out, block_x);
  const int64_t j = blk.tile * kQKTile + t;
  if (j < p.N) out[(blk.b * H_out + blk.head) * p.N + j] = sh.own_b[t];
}

}  // namespace pyattn
