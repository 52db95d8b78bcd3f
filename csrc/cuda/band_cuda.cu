// CUDA kernels: band_to_dense and attention_received.
//
// Each __global__ kernel is a thin shell over a per-thread function in
// ../band_kernels.h, which the test-only host emulator
// (tests/harness/emulate_cuda.cpp) runs for every block and thread on the CPU.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/cuda/Atomic.cuh>
#include <torch/library.h>

#include "../prepare.h"

namespace pyattn {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void received_band_kernel(const BandParams<scalar_t, acc_t> p, acc_t* out) {
  received_band_thread(p, out, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
}

template <typename scalar_t, typename acc_t>
__global__ void received_global_column_kernel(const BandParams<scalar_t, acc_t> p,
                                              acc_t* out, int64_t total) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < total) received_global_column_thread(p, out, t);
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

at::Tensor attention_received_cuda(const at::Tensor& local_attn,
                                   const std::optional<at::Tensor>& global_attn,
                                   const std::optional<at::Tensor>& global_attention_mask,
                                   const std::optional<at::Tensor>& head_weights,
                                   const std::optional<at::Tensor>& row_weights,
    std::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(local_attn.device());
  const Prepared prep = prepare(local_attn, global_attn, global_attention_mask,
                                head_weights, row_weights);
  at::Tensor acc = received_accumulator(prep);
  if (acc.numel() == 0) return acc.to(received_out_dtype(local_attn, out_dtype));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, local_attn.scalar_type(), "attention_received_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto p = band_params<scalar_t, acc_t>(prep);
        const dim3 grid(received_column_blocks(prep.N), prep.H, prep.B);
        received_band_kernel<<<grid, kReceivedBlock, 0, stream>>>(
            p, acc.mutable_data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (prep.X > 0) {
          const int64_t total = global_column_threads(prep.B, prep.H, prep.X, prep.N);
          const int64_t blocks = (total + kGlobalColumnThreads - 1) / kGlobalColumnThreads;
          received_global_column_kernel<<<blocks, kGlobalColumnThreads, 0, stream>>>(
              p, acc.mutable_data_ptr<acc_t>(), total);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
  return acc.to(received_out_dtype(local_attn, out_dtype));
}

at::Tensor band_to_dense_cuda(const at::Tensor& local_attn,
                              const std::optional<at::Tensor>& global_attn,
                              const std::optional<at::Tensor>& global_attention_mask) {
  const c10::cuda::CUDAGuard guard(local_attn.device());
  const Prepared prep = prepare(local_attn, global_attn, global_attention_mask,
                                std::nullopt, std::nullopt);
  at::Tensor out = at::empty({prep.B, prep.H, prep.N, prep.N}, local_attn.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, local_attn.scalar_type(), "band_to_dense_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        dense_kernel<<<dense_blocks(total), kDenseThreads, 0, stream>>>(
            band_params<scalar_t, acc_t>(prep), out.mutable_data_ptr<scalar_t>(), total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CUDA, m) {
  m.impl("band_to_dense", &band_to_dense_cuda);
  m.impl("attention_received", &attention_received_cuda);
}

}  // namespace pyattn
