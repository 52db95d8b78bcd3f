// Test-only host emulator of the CUDA kernels: compiled by g++ (no CUDA), it
// runs the very per-thread functions of csrc/band_kernels.h that the
// __global__ kernels in csrc/cuda/band_cuda.cu call, for every block and
// thread of the same launch shapes. None of the kernels synchronise within a
// block except at the __syncthreads() of received_columns_kernel, where every
// thread of a block runs phase 1 before any runs phase 2. Scratch and shared
// memory start as NaN, so a value read before it is written shows up.
#include <torch/extension.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "prepare.h"
#include "qk_prepare.h"

namespace pyattn {

at::Tensor emulate_attention_received(PYATTN_BAND_PARAMS) {
  return received_with(PYATTN_BAND_ARGS, std::nullopt /* the op's default dtype */,
      [](const Prepared& prep, const auto& p, auto* out) {
        using acc_t = std::remove_pointer_t<decltype(out)>;
        const int64_t H_out = prep.head_weights.defined() ? 1 : prep.H;
        // The output starts as junk (NaN): every element must be written.
        std::fill(out, out + prep.B * H_out * prep.N, std::numeric_limits<acc_t>::quiet_NaN());
        // received_columns_kernel<<<(column blocks x B, H_out), kReceivedBlock,
        // shared>>>: per block, phase 1 (stage) for every thread, then, after
        // __syncthreads(), phase 2 for every thread.
        std::vector<acc_t> shared(received_shared_count(prep.w, prep.X),
                                  std::numeric_limits<acc_t>::quiet_NaN());
        for (int64_t y = 0; y < H_out; ++y)
          for (int64_t x = 0; x < received_column_blocks(prep.N) * prep.B; ++x) {
            std::fill(shared.begin(), shared.end(), std::numeric_limits<acc_t>::quiet_NaN());
            for (int64_t t = 0; t < kReceivedBlock; ++t)
              received_stage_thread(p, shared.data(), x, t);
            for (int64_t t = 0; t < kReceivedBlock; ++t)
              received_columns_thread(p, shared.data(), out, x, y, t);
          }
        const int64_t partials = global_partial_threads(prep.B, prep.H, prep.X, prep.N);
        if (partials > 0) {
          // received_global_partial_kernel, then received_global_finish_kernel.
          std::vector<acc_t> partial(partials, std::numeric_limits<acc_t>::quiet_NaN());
          const int64_t blocks = (partials + kGlobalColumnThreads - 1) / kGlobalColumnThreads;
          for (int64_t block = 0; block < blocks; ++block)
            for (int64_t t = 0; t < kGlobalColumnThreads; ++t) {
              const int64_t index = block * kGlobalColumnThreads + t;
              if (index < partials) received_global_partial_thread(p, partial.data(), index);
            }
          const int64_t finishers = global_finish_threads(prep.B, H_out, prep.X);
          const int64_t finish_blocks = (finishers + kGlobalColumnThreads - 1) / kGlobalColumnThreads;
          for (int64_t block = 0; block < finish_blocks; ++block)
            for (int64_t t = 0; t < kGlobalColumnThreads; ++t) {
              const int64_t index = block * kGlobalColumnThreads + t;
              if (index < finishers)
                received_global_finish_thread(p, partial.data(), out, index);
            }
        }
      });
}

at::Tensor emulate_band_to_dense(const at::Tensor& local_attn,
                                 const std::optional<at::Tensor>& global_attn,
                                 const std::optional<at::Tensor>& global_attention_mask) {
  return dense_with(local_attn, global_attn, global_attention_mask,
      [](const Prepared& prep, const auto& p, auto* o) {
        using scalar_t = std::remove_pointer_t<decltype(o)>;
        // NaN-filled, so an element no thread writes shows up.
        const int64_t total = prep.B * prep.H * prep.N * prep.N;
        std::fill(o, o + total, std::numeric_limits<scalar_t>::quiet_NaN());
        // dense_kernel<<<dense_blocks(total), kDenseThreads>>>, grid-stride loop
        const int64_t blocks = dense_blocks(total);
        const int64_t stride = blocks * kDenseThreads;
        for (int64_t block = 0; block < blocks; ++block)
          for (int64_t t = 0; t < kDenseThreads; ++t)
            for (int64_t e = block * kDenseThreads + t; e < total; e += stride)
              dense_thread(p, o, e);
      });
}

// attention_received_qk: qk_rows_kernel then qk_columns_kernel
// (csrc/cuda/qk_cuda.cu), phase by phase: every thread of a block runs a
// phase before any runs the next, as the __syncthreads() between them
// require. Shared memory, lse and the output start as NaN; each thread's
// registers (its 4 x 4 scores) live in `acc`.
void emulate_qk(const QKPrepared& prep, at::Tensor& out) {
  out.fill_(std::numeric_limits<double>::quiet_NaN());
  at::Tensor lse = at::full({prep.B, prep.H, prep.N}, std::numeric_limits<double>::quiet_NaN(),
                            prep.q.options().dtype(at::kFloat));
  const int64_t H_out = prep.head_weights.defined() ? 1 : prep.H;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, prep.q.scalar_type(), "emulate_attention_received_qk", [&] {
        const auto p = qk_params<scalar_t>(prep, prep.q.const_data_ptr<scalar_t>(),
                                           prep.k.const_data_ptr<scalar_t>());
        std::vector<float> memory(qk_shared_floats());
        const QKShared sh = qk_shared(memory.data());
        std::vector<QKAcc> acc(kQKThreads);
        float* lse_p = lse.mutable_data_ptr<float>();
        float* out_p = out.mutable_data_ptr<float>();
        const auto each = [](auto&& phase) {
          for (int64_t t = 0; t < kQKThreads; ++t) phase(t);
        };
        const auto scores = [&](int64_t b, int64_t h, int64_t rb, int64_t cb) {
          each([&](int64_t t) { qk_acc_zero(&acc[t]); });
          for (int64_t d0 = 0; d0 < p.d; d0 += kQKChunk) {
            each([&](int64_t t) { qk_load_chunk(p, sh, b, h, rb, cb, d0, t); });
            each([&](int64_t t) { qk_accumulate_chunk(sh, t, &acc[t]); });
          }
        };
        // qk_rows_kernel<<<blocks * B * H, kQKThreads, shared>>>
        for (int64_t x = 0; x < p.blocks * p.B * p.H; ++x) {
          std::fill(memory.begin(), memory.end(), std::numeric_limits<float>::quiet_NaN());
          const QKBlock blk = qk_block(p, p.H, x);
          each([&](int64_t t) { qk_rows_init(p, sh, x, t); });
          for (int64_t cb = 0; cb < p.blocks; ++cb) {
            if (!qk_tile_needed(p, blk.b, blk.tile, cb)) continue;
            each([&](int64_t t) { qk_stage_flags(p, sh.col_real, sh.col_glob, blk.b, cb, t); });
            scores(blk.b, blk.head, blk.tile, cb);
            each([&](int64_t t) { qk_store_scores(p, sh, blk.tile, cb, t, acc[t]); });
            each([&](int64_t t) { qk_row_partials(sh, t); });
            each([&](int64_t t) { qk_row_combine(sh, t); });
          }
          each([&](int64_t t) { qk_rows_finish(p, sh, lse_p, x, t); });
        }
        // qk_columns_kernel<<<blocks * B * H_out, kQKThreads, shared>>>
        for (int64_t x = 0; x < p.blocks * p.B * H_out; ++x) {
          std::fill(memory.begin(), memory.end(), std::numeric_limits<float>::quiet_NaN());
          const QKBlock blk = qk_block(p, H_out, x);
          const int64_t h_begin = p.head_weights ? 0 : blk.head;
          const int64_t h_end = p.head_weights ? p.H : blk.head + 1;
          each([&](int64_t t) { qk_cols_init(p, sh, x, t); });
          for (int64_t h = h_begin; h < h_end; ++h) {
            each([&](int64_t t) { qk_cols_head_begin(sh, t); });
            for (int64_t rb = 0; rb < p.blocks; ++rb) {
              if (!qk_tile_needed(p, blk.b, rb, blk.tile)) continue;
              each([&](int64_t t) { qk_stage_rows(p, sh, lse_p, blk.b, h, rb, t); });
              scores(blk.b, h, rb, blk.tile);
              each([&](int64_t t) { qk_store_probs(p, sh, rb, blk.tile, t, acc[t]); });
              each([&](int64_t t) { qk_col_partials(sh, t); });
              each([&](int64_t t) { qk_col_combine(sh, t); });
            }
            each([&](int64_t t) { qk_cols_head_end(p, sh, h, t); });
          }
          each([&](int64_t t) { qk_cols_finish(p, sh, out_p, x, t); });
        }
      });
}

at::Tensor emulate_attention_received_qk(PYATTN_QK_PARAMS) {
  return qk_received(PYATTN_QK_ARGS, emulate_qk);
}

}  // namespace pyattn

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_received", &pyattn::emulate_attention_received);
  m.def("band_to_dense", &pyattn::emulate_band_to_dense);
  m.def("attention_received_qk", &pyattn::emulate_attention_received_qk);
}
