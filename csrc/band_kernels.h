// Index arithmetic and per-thread work shared by the CPU kernels, the CUDA
// kernels and the test-only host emulator (tests/harness/emulate_cuda.cpp).
//
// Layout (../shared/LONGFORMER_LAYOUT.md), for one item b and head h, window w
// (even), one-sided half-window hw = w / 2 and X global slots:
//   local[b, h, i, X + k]  = A[i, i + k - hw]   for a non-global row i, k = 0..w
//   local[b, h, i, m]      = A[i, g_m]          for a non-global row i, slot m
//   global[b, h, j, m]     = A[g_m, j]          for the global row g_m
// A window entry at a global column is 0 (its value sits in the global slot),
// so adding both is correct. Unused slots (g_m = -1) and the local rows of
// global tokens are ignored.
//
// Nothing here allocates or touches ATen: plain pointers and strides, so the
// same code runs in a CUDA thread and in g++-compiled host code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PYATTN_HD __host__ __device__ __forceinline__
#else
#define PYATTN_HD inline
#endif

namespace pyattn {

// Raw view of one call's inputs. `acc_t` is the accumulation type (float for
// half/bfloat16/float, double for double).
template <typename scalar_t, typename acc_t>
struct BandParams {
  const scalar_t* local;  // (B, H, N, X + w + 1), strides below
  int64_t ls_b, ls_h, ls_i, ls_k;
  const scalar_t* global;  // (B, H, N_pad, X), may be null when X == 0
  int64_t gs_b, gs_h, gs_j, gs_m;
  const int64_t* slot_of;     // (B, N) contiguous: slot m of a global token, else -1
  const int64_t* global_pos;  // (B, X) contiguous: position of slot m, else -1
  const acc_t* head_weights;  // (H,): fuse heads as sum_h w_h R_h (null if H = 0)
  bool fused;                 // head_weights were given (output (B, N))
  const acc_t* row_weights;   // (B, N) or null: weight of each query row
  int64_t B, H, N, X, w, hw;
};

// Column j of query row i lies in the band at local offset X + (j - i + hw)
// when 0 <= j - i + hw <= w; this returns that k, or -1 outside the band.
PYATTN_HD int64_t band_k(int64_t i, int64_t j, int64_t hw, int64_t w) {
  const int64_t k = j - i + hw;
  return (k >= 0 && k <= w) ? k : -1;
}

template <typename scalar_t, typename acc_t>
PYATTN_HD acc_t load(const scalar_t* p) {
  return static_cast<acc_t>(*p);
}

template <typename scalar_t, typename acc_t>
PYATTN_HD const scalar_t* local_ptr(const BandParams<scalar_t, acc_t>& p,
                                    int64_t b, int64_t h, int64_t i) {
  return p.local + b * p.ls_b + h * p.ls_h + i * p.ls_i;
}

template <typename scalar_t, typename acc_t>
PYATTN_HD const scalar_t* global_ptr(const BandParams<scalar_t, acc_t>& p,
                                     int64_t b, int64_t h, int64_t j) {
  return p.global + b * p.gs_b + h * p.gs_h + j * p.gs_j;
}

template <typename scalar_t, typename acc_t>
PYATTN_HD acc_t row_weight(const BandParams<scalar_t, acc_t>& p, int64_t b,
                           int64_t i) {
  return p.row_weights ? p.row_weights[b * p.N + i] : acc_t(1);
}

// A[b, h, i, j], one element of the dense matrix, computed from the band.
template <typename scalar_t, typename acc_t>
PYATTN_HD acc_t dense_value(const BandParams<scalar_t, acc_t>& p, int64_t b,
                            int64_t h, int64_t i, int64_t j) {
  const int64_t row_slot = p.slot_of[b * p.N + i];
  if (row_slot >= 0) {  // a global row lives in global_attn
    return load<scalar_t, acc_t>(global_ptr(p, b, h, j) + row_slot * p.gs_m);
  }
  const scalar_t* row = local_ptr(p, b, h, i);
  acc_t v = acc_t(0);
  const int64_t k = band_k(i, j, p.hw, p.w);
  if (k >= 0) v += load<scalar_t, acc_t>(row + (p.X + k) * p.ls_k);
  const int64_t col_slot = p.slot_of[b * p.N + j];
  if (col_slot >= 0) v += load<scalar_t, acc_t>(row + col_slot * p.ls_k);
  return v;
}

// ---------------------------------------------------------------------------
// CUDA work, one function per thread: (block index, thread index, params).
// The launchers in cuda/band_cuda.cu and the host emulator call exactly these.
//
// attention_received is deterministic: every output element has one owner
// thread that sums in a fixed order, and no float atomics are used.
//   1. received_stage_thread / received_columns_thread, one block per
//      (column block, item) and output head (all heads in one thread when
//      heads are fused): the band and the global rows, written with a plain
//      store;
//   2. received_global_partial_thread: per (item, head, slot, chunk of rows),
//      the chunk's part of the global column (the local slot column), stored;
//   3. received_global_finish_thread: per (item, output head, slot), the
//      chunks (and heads) summed in order and added to that slot's column,
//      which no other thread of this pass touches.
// The launches run in this order on one stream.

// Number of columns one block of the attention-received kernel owns.
constexpr int kReceivedBlock = 256;
// Rows of the band walk loaded before any is added (loads kept in flight).
constexpr int kReceivedUnroll = 4;

// Launch shapes, shared by the CUDA launchers and the host emulator.
// received_columns: grid (column blocks x B, H_out) x kReceivedBlock threads,
// shared memory received_shared_count(w, X) acc_t values.
PYATTN_HD int64_t received_column_blocks(int64_t N) {
  return (N + kReceivedBlock - 1) / kReceivedBlock;
}
PYATTN_HD int64_t received_shared_count(int64_t w, int64_t X) {
  return kReceivedBlock + w + X;
}

// The rows that can reach columns [j0, j0 + kReceivedBlock): [begin, end).
PYATTN_HD void received_row_range(int64_t N, int64_t hw, int64_t j0,
                                  int64_t* begin, int64_t* end) {
  *begin = j0 - hw > 0 ? j0 - hw : 0;
  const int64_t last = j0 + kReceivedBlock - 1 + hw;
  *end = last + 1 < N ? last + 1 : N;
}

// Phase 1 of a received_columns block: stage in shared memory the weight of
// each row the block walks (0 for the rows of global tokens, whose attention
// lives in global_attn) and, after them, the weight of the row of each global
// slot (0 for an unused slot).
template <typename scalar_t, typename acc_t>
PYATTN_HD void received_stage_thread(const BandParams<scalar_t, acc_t>& p,
                                     acc_t* shared, int64_t block_x,
                                     int64_t thread_x) {
  const int64_t blocks = received_column_blocks(p.N);
  const int64_t b = block_x / blocks;
  const int64_t j0 = (block_x % blocks) * kReceivedBlock;
  int64_t begin, end;
  received_row_range(p.N, p.hw, j0, &begin, &end);
  for (int64_t s = thread_x; s < end - begin; s += kReceivedBlock) {
    const int64_t i = begin + s;
    const bool local_row = p.slot_of[b * p.N + i] < 0;
    shared[s] = local_row ? row_weight(p, b, i) : acc_t(0);
  }
  acc_t* slot_weight = shared + kReceivedBlock + p.w;
  for (int64_t m = thread_x; m < p.X; m += kReceivedBlock) {
    const int64_t g = p.global_pos[b * p.X + m];
    slot_weight[m] = g >= 0 ? row_weight(p, b, g) : acc_t(0);
  }
}

// Phase 2: thread thread_x owns column j = j0 + thread_x of item b and output
// head block_y (all heads, weighted, when fused). Every thread walks the same
// rows, so for a fixed row neighbouring threads read neighbouring band
// elements (coalesced); loads are predicated on the band's bounds, never on a
// loaded value, and kReceivedUnroll rows are loaded before any is added.
template <typename scalar_t, typename acc_t>
PYATTN_HD void received_columns_thread(const BandParams<scalar_t, acc_t>& p,
                                       const acc_t* shared, acc_t* out,
                                       int64_t block_x, int64_t block_y,
                                       int64_t thread_x) {
  const int64_t blocks = received_column_blocks(p.N);
  const int64_t b = block_x / blocks;
  const int64_t j0 = (block_x % blocks) * kReceivedBlock;
  const int64_t j = j0 + thread_x;
  if (j >= p.N) return;
  int64_t begin, end;
  received_row_range(p.N, p.hw, j0, &begin, &end);
  const acc_t* slot_weight = shared + kReceivedBlock + p.w;
  const bool fused = p.fused;
  const int64_t h_begin = fused ? 0 : block_y;
  const int64_t h_end = fused ? p.H : block_y + 1;
  acc_t total = acc_t(0);
  for (int64_t h = h_begin; h < h_end; ++h) {
    const scalar_t* rows = local_ptr(p, b, h, 0) + p.X * p.ls_k;
    acc_t acc = acc_t(0);
    int64_t i = begin;
    for (; i + kReceivedUnroll <= end; i += kReceivedUnroll) {
      acc_t v[kReceivedUnroll];
#pragma unroll
      for (int u = 0; u < kReceivedUnroll; ++u) {
        const int64_t k = j - (i + u) + p.hw;
        const bool inside = k >= 0 && k <= p.w;
        v[u] = inside ? load<scalar_t, acc_t>(rows + (i + u) * p.ls_i + k * p.ls_k)
                      : acc_t(0);
      }
#pragma unroll
      for (int u = 0; u < kReceivedUnroll; ++u) acc += shared[i + u - begin] * v[u];
    }
    for (; i < end; ++i) {
      const int64_t k = j - i + p.hw;
      const bool inside = k >= 0 && k <= p.w;
      const acc_t v = inside ? load<scalar_t, acc_t>(rows + i * p.ls_i + k * p.ls_k)
                             : acc_t(0);
      acc += shared[i - begin] * v;
    }
    // The rows of the global tokens: A[g_m, j] = global[b, h, j, m]. An
    // unused slot's weight is 0, and its (junk) value is not added.
    const scalar_t* column = p.X > 0 ? global_ptr(p, b, h, j) : nullptr;
    for (int64_t m = 0; m < p.X; ++m) {
      const acc_t v = load<scalar_t, acc_t>(column + m * p.gs_m);
      acc += slot_weight[m] != acc_t(0) ? slot_weight[m] * v : acc_t(0);
    }
    total += fused ? p.head_weights[h] * acc : acc;
  }
  const int64_t ho = fused ? 0 : block_y;
  out[(b * (fused ? 1 : p.H) + ho) * p.N + j] = total;
}

// Rows one thread of the global-column partial pass sums.
constexpr int kGlobalChunk = 64;
constexpr int kGlobalColumnThreads = 256;

PYATTN_HD int64_t global_chunks(int64_t N) {
  return (N + kGlobalChunk - 1) / kGlobalChunk;
}
// received_global_partial: one thread per (b, h, m, chunk); the partial
// sums are stored in a (B, H, X, chunks) scratch tensor.
PYATTN_HD int64_t global_partial_threads(int64_t B, int64_t H, int64_t X,
                                         int64_t N) {
  return B * H * X * global_chunks(N);
}
// received_global_finish: one thread per (b, output head, m).
PYATTN_HD int64_t global_finish_threads(int64_t B, int64_t H_out, int64_t X) {
  return B * H_out * X;
}
// dense: a grid-stride loop over B * H * N * N elements.
constexpr int kDenseThreads = 256;
PYATTN_HD int64_t dense_blocks(int64_t total) {
  const int64_t blocks = (total + kDenseThreads - 1) / kDenseThreads;
  return blocks < 65535 * 32 ? blocks : 65535 * 32;
}

// Attention the global column of slot m receives from the local rows
// [c * kGlobalChunk, (c + 1) * kGlobalChunk), for the flat thread index t
// over (b, h, m, c), stored in partial[t].
template <typename scalar_t, typename acc_t>
PYATTN_HD void received_global_partial_thread(
    const BandParams<scalar_t, acc_t>& p, acc_t* partial, int64_t t) {
  const int64_t chunks = global_chunks(p.N);
  const int64_t c = t % chunks;
  const int64_t m = (t / chunks) % p.X;
  const int64_t h = (t / (chunks * p.X)) % p.H;
  const int64_t b = t / (chunks * p.X * p.H);
  if (b >= p.B) return;
  const int64_t i_begin = c * kGlobalChunk;
  const int64_t i_end =
      i_begin + kGlobalChunk < p.N ? i_begin + kGlobalChunk : p.N;
  const scalar_t* column = local_ptr(p, b, h, 0) + m * p.ls_k;
  acc_t acc = acc_t(0);
  for (int64_t i = i_begin; i < i_end; ++i) {
    const bool local_row = p.slot_of[b * p.N + i] < 0;
    const acc_t v = load<scalar_t, acc_t>(column + i * p.ls_i);
    acc += local_row ? row_weight(p, b, i) * v : acc_t(0);
  }
  partial[t] = acc;
}

// The chunks (and, fused, the heads) of slot m summed in order and added to
// the output at its column g_m: for the flat index t over (b, ho, m).
template <typename scalar_t, typename acc_t>
PYATTN_HD void received_global_finish_thread(
    const BandParams<scalar_t, acc_t>& p, const acc_t* partial, acc_t* out,
    int64_t t) {
  const bool fused = p.fused;
  const int64_t H_out = fused ? 1 : p.H;
  const int64_t m = t % p.X;
  const int64_t ho = (t / p.X) % H_out;
  const int64_t b = t / (p.X * H_out);
  if (b >= p.B) return;
  const int64_t g = p.global_pos[b * p.X + m];
  if (g < 0) return;
  const int64_t chunks = global_chunks(p.N);
  const int64_t h_begin = fused ? 0 : ho;
  const int64_t h_end = fused ? p.H : ho + 1;
  acc_t total = acc_t(0);
  for (int64_t h = h_begin; h < h_end; ++h) {
    const acc_t* src = partial + ((b * p.H + h) * p.X + m) * chunks;
    acc_t acc = acc_t(0);
    for (int64_t c = 0; c < chunks; ++c) acc += src[c];
    total += fused ? p.head_weights[h] * acc : acc;
  }
  out[(b * H_out + ho) * p.N + g] += total;
}

// Dense conversion, one output element per flat index e over (b, h, i, j).
template <typename scalar_t, typename acc_t>
PYATTN_HD void dense_thread(const BandParams<scalar_t, acc_t>& p,
                            scalar_t* out, int64_t e) {
  const int64_t j = e % p.N;
  const int64_t i = (e / p.N) % p.N;
  const int64_t h = (e / (p.N * p.N)) % p.H;
  const int64_t b = e / (p.N * p.N * p.H);
  out[e] = static_cast<scalar_t>(dense_value(p, b, h, i, j));
}

}  // namespace pyattn
