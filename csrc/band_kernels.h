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
  const acc_t* head_weights;  // (H,) or null: fuse heads as sum_h w_h R_h
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

template <typename acc_t>
PYATTN_HD void atomic_add(acc_t* address, acc_t value) {
#if defined(__CUDA_ARCH__)
  atomicAdd(address, value);
#else
  *address += value;  // host emulator: threads run one after another
#endif
}

// Adds a head's partial column sum to the output: out[b, h, j], or
// out[b, j] weighted by head_weights[h] when heads are fused.
template <typename scalar_t, typename acc_t>
PYATTN_HD void add_to_output(const BandParams<scalar_t, acc_t>& p, acc_t* out,
                             int64_t b, int64_t h, int64_t j, acc_t value) {
  if (p.head_weights) {
    atomic_add(out + b * p.N + j, p.head_weights[h] * value);
  } else {
    atomic_add(out + (b * p.H + h) * p.N + j, value);
  }
}

// Number of columns one block of the attention-received kernel owns.
constexpr int kReceivedBlock = 256;

// Attention received, band and global-row part, for column
// j = block_x * kReceivedBlock + thread_x of item block_z, head block_y.
// Every thread walks the same rows i (so that, for a fixed i, neighbouring
// threads read neighbouring band elements: coalesced), adding the band entry
// that falls in its column. Adds into out[b, ho, j] where ho = 0 when heads
// are fused (head_weights given) and ho = h otherwise; `out` is zeroed first.
template <typename scalar_t, typename acc_t>
PYATTN_HD void received_band_thread(const BandParams<scalar_t, acc_t>& p,
                                    acc_t* out, int64_t block_x,
                                    int64_t block_y, int64_t block_z,
                                    int64_t thread_x) {
  const int64_t b = block_z, h = block_y;
  const int64_t j0 = block_x * kReceivedBlock;
  const int64_t j = j0 + thread_x;
  const int64_t i_begin = j0 - p.hw > 0 ? j0 - p.hw : 0;
  const int64_t i_last = j0 + kReceivedBlock - 1 + p.hw;
  const int64_t i_end = i_last + 1 < p.N ? i_last + 1 : p.N;
  if (j >= p.N) return;
  acc_t acc = acc_t(0);
  for (int64_t i = i_begin; i < i_end; ++i) {
    const int64_t k = band_k(i, j, p.hw, p.w);
    if (k < 0 || p.slot_of[b * p.N + i] >= 0) continue;
    acc += row_weight(p, b, i) *
           load<scalar_t, acc_t>(local_ptr(p, b, h, i) + (p.X + k) * p.ls_k);
  }
  for (int64_t m = 0; m < p.X; ++m) {  // the rows of the global tokens
    const int64_t g = p.global_pos[b * p.X + m];
    if (g < 0) continue;
    acc += row_weight(p, b, g) *
           load<scalar_t, acc_t>(global_ptr(p, b, h, j) + m * p.gs_m);
  }
  add_to_output(p, out, b, h, j, acc);
}

// Rows one thread of the global-column kernel sums.
constexpr int kGlobalChunk = 64;
constexpr int kGlobalColumnThreads = 256;

// Launch shapes, shared by the CUDA launchers and the host emulator.
// received_band: grid (column blocks, H, B) x kReceivedBlock threads.
PYATTN_HD int64_t received_column_blocks(int64_t N) {
  return (N + kReceivedBlock - 1) / kReceivedBlock;
}
// received_global_column: one thread per (b, h, m, chunk of rows).
PYATTN_HD int64_t global_column_threads(int64_t B, int64_t H, int64_t X,
                                        int64_t N) {
  return B * H * X * ((N + kGlobalChunk - 1) / kGlobalChunk);
}
// dense: a grid-stride loop over B * H * N * N elements.
constexpr int kDenseThreads = 256;
PYATTN_HD int64_t dense_blocks(int64_t total) {
  const int64_t blocks = (total + kDenseThreads - 1) / kDenseThreads;
  return blocks < 65535 * 32 ? blocks : 65535 * 32;
}

// Attention received by global column g_m from the non-global rows
// [c * kGlobalChunk, (c + 1) * kGlobalChunk), for the flat thread index
// t over (b, h, m, c): one atomic add per chunk.
template <typename scalar_t, typename acc_t>
PYATTN_HD void received_global_column_thread(
    const BandParams<scalar_t, acc_t>& p, acc_t* out, int64_t t) {
  const int64_t chunks = (p.N + kGlobalChunk - 1) / kGlobalChunk;
  const int64_t c = t % chunks;
  const int64_t m = (t / chunks) % p.X;
  const int64_t h = (t / (chunks * p.X)) % p.H;
  const int64_t b = t / (chunks * p.X * p.H);
  if (b >= p.B) return;
  const int64_t g = p.global_pos[b * p.X + m];
  if (g < 0) return;
  const int64_t i_begin = c * kGlobalChunk;
  const int64_t i_end =
      i_begin + kGlobalChunk < p.N ? i_begin + kGlobalChunk : p.N;
  acc_t acc = acc_t(0);
  for (int64_t i = i_begin; i < i_end; ++i) {
    if (p.slot_of[b * p.N + i] >= 0) continue;
    acc += row_weight(p, b, i) *
           load<scalar_t, acc_t>(local_ptr(p, b, h, i) + m * p.ls_k);
  }
  add_to_output(p, out, b, h, g, acc);
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
