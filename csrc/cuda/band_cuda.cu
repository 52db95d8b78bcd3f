// CUDA kernels: band_to_dense and attention_received.
//
// Each __global__ kernel is a thin shell over a per-thread function in
// ../band_kernels.h, which the test-only host emulator
// (tests/harness/emulate_cuda.cpp) runs for every block and thread on the CPU.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../prepare.h"

namespace pyattn {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void received_columns_kernel(const BandParams<scalar_t, acc_t> p, acc_t* out) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  acc_t* shared = reinterpret_cast<acc_t*>(shared_bytes);
  received_stage_thread(p, shared, blockIdx.x, threadIdx.x);
  __syncthreads();
  received_columns_thread(p, shared, out, blockIdx.x, blockIdx.y, threadIdx.x);
}

template <typename scalar_t, typename acc_t>
__global__ void received_global_partial_kernel(const BandParams<scalar_t, acc_t> p,
                                               acc_t* partial, int64_t total) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < total) received_global_partial_thread(p, partial, t);
}

template <typename scalar_t, typename acc_t>
__global__ void received_global_finish_kernel(const BandParams<scalar_t, acc_t> p,
                                              const acc_t* partial, acc_t* out,
                                              int64_t total) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < total) received_global_finish_thread(p, partial, out, t);
}

template <typename scalar_t, typename acc_t>
__global__ void dense_kernel(const BandParams<scalar_t, acc_t> p, scalar_t* out,
                             int64_t total) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < total; e += stride) {
    dense_thread(p, out, e);
  }
}

at::Tensor attention_received_cuda(PYATTN_BAND_PARAMS, std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(local_attn.device());
  return received_with(PYATTN_BAND_ARGS, out_dtype, [](const Prepared& prep, const auto& p, auto* out) {
    using acc_t = std::remove_pointer_t<decltype(out)>;
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t H_out = prep.head_weights.defined() ? 1 : prep.H;
    const int64_t column_blocks = received_column_blocks(prep.N) * prep.B;
    TORCH_CHECK(column_blocks <= 0x7fffffff && H_out <= 65535,
                "attention_received on CUDA supports at most 65,535 heads and "
                "2^31 - 1 column blocks of ", kReceivedBlock, " columns per launch; got H = ",
                prep.H, ", B = ", prep.B, ", N = ", prep.N);
    const size_t shared = received_shared_count(prep.w, prep.X) * sizeof(acc_t);
    TORCH_CHECK(shared <= 48 * 1024, "attention_received on CUDA stages ",
                received_shared_count(prep.w, prep.X), " row weights in shared memory, "
                "over 48 KiB for window w = ", prep.w, " and X = ", prep.X,
                " global slots");
    const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(H_out));
    received_columns_kernel<<<grid, kReceivedBlock, shared, stream>>>(p, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t partials = global_partial_threads(prep.B, prep.H, prep.X, prep.N);
    if (partials > 0) {
      at::Tensor partial = at::empty(
          {partials}, prep.local.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      received_global_partial_kernel<<<(partials + kGlobalColumnThreads - 1) / kGlobalColumnThreads,
                                       kGlobalColumnThreads, 0, stream>>>(
          p, partial.mutable_data_ptr<acc_t>(), partials);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int64_t finishers = global_finish_threads(prep.B, H_out, prep.X);
      received_global_finish_kernel<<<(finishers + kGlobalColumnThreads - 1) / kGlobalColumnThreads,
                                      kGlobalColumnThreads, 0, stream>>>(
          p, partial.const_data_ptr<acc_t>(), out, finishers);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

at::Tensor band_to_dense_cuda(const at::Tensor& local_attn,
                              const std::optional<at::Tensor>& global_attn,
                              const std::optional<at::Tensor>& global_attention_mask) {
  const c10::cuda::CUDAGuard guard(local_attn.device());
  return dense_with(local_attn, global_attn, global_attention_mask,
                    [](const Prepared& prep, const auto& p, auto* out) {
                      const int64_t total = prep.B * prep.H * prep.N * prep.N;
                      dense_kernel<<<dense_blocks(total), kDenseThreads, 0,
                                     c10::cuda::getCurrentCUDAStream()>>>(p, out, total);
                      C10_CUDA_KERNEL_LAUNCH_CHECK();
                    });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CUDA, m) {
  m.impl("band_to_dense", &band_to_dense_cuda);
  m.impl("attention_received", &attention_received_cuda);
}

}  // namespace pyattn
