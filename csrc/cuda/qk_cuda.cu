// CUDA kernels: attention_received_qk.
//
// Two launches on the current stream, each a thin shell over the per-thread
// phases of ../qk_kernels.h (which the test-only host emulator,
// tests/harness/emulate_cuda.cpp, runs for every block and thread):
//   pass 1, one block per (item, head, row block of 64): q and k tiles staged
//           in shared memory kQKChunk head-size entries at a time, 4 x 4
//           scores per thread, the row's running (max, sum) kept by one owner
//           thread per row; writes lse (B, H, N);
//   pass 2, one block per (item, output head, column block of 64): each
//           column has one owner thread, which adds the tile's weighted
//           probabilities row block by row block in order (and heads in
//           order when fused). No float atomics: bitwise repeatable.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <ATen/Dispatch.h>

#include "../qk_prepare.h"

namespace pyattn {
namespace {

template <typename scalar_t>
__global__ void __launch_bounds__(kQKThreads)
    qk_rows_kernel(const QKParams<scalar_t> p, float* lse) {
  extern __shared__ __align__(16) float qk_shared_mem[];
  const QKShared sh = qk_shared(qk_shared_mem);
  const int64_t t = threadIdx.x;
  const QKBlock blk = qk_block(p, p.H, blockIdx.x);
  qk_rows_init(p, sh, blockIdx.x, t);
  for (int64_t cb = 0; cb < p.blocks; ++cb) {
    if (!qk_tile_needed(p, blk.b, blk.tile, cb)) continue;  // uniform over the block
    __syncthreads();
    qk_stage_flags(p, sh.col_real, sh.col_glob, blk.b, cb, t);
    QKAcc acc;
    qk_acc_zero(&acc);
    for (int64_t d0 = 0; d0 < p.d; d0 += kQKChunk) {
      __syncthreads();
      qk_load_chunk(p, sh, blk.b, blk.head, blk.tile, cb, d0, t);
      __syncthreads();
      qk_accumulate_chunk(sh, t, &acc);
    }
    __syncthreads();
    qk_store_scores(p, sh, blk.tile, cb, t, acc);
    __syncthreads();
    qk_row_partials(sh, t);
    __syncthreads();
    qk_row_combine(sh, t);
  }
  qk_rows_finish(p, sh, lse, blockIdx.x, t);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kQKThreads)
    qk_columns_kernel(const QKParams<scalar_t> p, const float* lse, float* out) {
  extern __shared__ __align__(16) float qk_shared_mem[];
  const QKShared sh = qk_shared(qk_shared_mem);
  const int64_t t = threadIdx.x;
  const int64_t H_out = qk_out_heads(p.head_weights, p.H);
  const QKBlock blk = qk_block(p, H_out, blockIdx.x);
  const int64_t h_begin = p.head_weights ? 0 : blk.head;
  const int64_t h_end = p.head_weights ? p.H : blk.head + 1;
  qk_cols_init(p, sh, blockIdx.x, t);
  for (int64_t h = h_begin; h < h_end; ++h) {
    qk_cols_head_begin(sh, t);
    for (int64_t rb = 0; rb < p.blocks; ++rb) {
      if (!qk_tile_needed(p, blk.b, rb, blk.tile)) continue;  // uniform over the block
      __syncthreads();
      qk_stage_rows(p, sh, lse, blk.b, h, rb, t);
      QKAcc acc;
      qk_acc_zero(&acc);
      for (int64_t d0 = 0; d0 < p.d; d0 += kQKChunk) {
        __syncthreads();
        qk_load_chunk(p, sh, blk.b, h, rb, blk.tile, d0, t);
        __syncthreads();
        qk_accumulate_chunk(sh, t, &acc);
      }
      __syncthreads();
      qk_store_probs(p, sh, rb, blk.tile, t, acc);
      __syncthreads();
      qk_col_partials(sh, t);
      __syncthreads();
      qk_col_combine(sh, t);
    }
    qk_cols_head_end(p, sh, h, t);
  }
  qk_cols_finish(p, sh, out, blockIdx.x, t);
}

at::Tensor attention_received_qk_cuda(PYATTN_QK_PARAMS) {
  const c10::cuda::CUDAGuard guard(q.device());
  return qk_received(PYATTN_QK_ARGS, [](const QKPrepared& prep, at::Tensor& out) {
    const int64_t H_out = prep.head_weights.defined() ? 1 : prep.H;
    const int64_t row_grid = prep.blocks * prep.B * prep.H;
    const int64_t col_grid = prep.blocks * prep.B * H_out;
    TORCH_CHECK(row_grid <= 0x7fffffff,
                "attention_received_qk on CUDA supports at most 2^31 - 1 blocks of ",
                kQKTile, " rows per launch; got B = ", prep.B, ", H = ", prep.H, ", N = ", prep.N);
    at::Tensor lse = at::empty({prep.B, prep.H, prep.N}, prep.q.options().dtype(at::kFloat));
    const size_t shared = qk_shared_floats() * sizeof(float);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, prep.q.scalar_type(), "attention_received_qk_cuda", [&] {
          const auto p = qk_params<scalar_t>(prep, prep.q.const_data_ptr<scalar_t>(),
                                             prep.k.const_data_ptr<scalar_t>());
          qk_rows_kernel<scalar_t><<<static_cast<unsigned>(row_grid), kQKThreads, shared, stream>>>(
              p, lse.mutable_data_ptr<float>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          qk_columns_kernel<scalar_t><<<static_cast<unsigned>(col_grid), kQKThreads, shared, stream>>>(
              p, lse.const_data_ptr<float>(), out.mutable_data_ptr<float>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CUDA, m) {
  m.impl("attention_received_qk", &attention_received_qk_cuda);
}

}  // namespace pyattn
