// CPU kernels: band_to_dense and attention_received.
//
// attention_received gathers instead of scattering: each task owns one block
// of output columns of one (item, head group) and walks the rows whose band
// reaches that block, so no two threads write the same element and every band
// element is read once. The N x N matrix is never built.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../prepare.h"

namespace pyattn {
namespace {

constexpr int64_t kColumnBlock = 256;

template <typename scalar_t, typename acc_t>
void received_cpu_kernel(const BandParams<scalar_t, acc_t>& p, acc_t* out) {
  const bool fused = p.head_weights != nullptr;
  const int64_t H_out = fused ? 1 : p.H;
  const int64_t blocks = (p.N + kColumnBlock - 1) / kColumnBlock;
  // Global columns receive from every row: each task sums the rows inside
  // its own block into partial[b, ho, block, m]; reduced after the pass.
  std::vector<acc_t> partial(p.B * H_out * blocks * p.X, acc_t(0));

  at::parallel_for(0, p.B * H_out * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(kColumnBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task % blocks;
      const int64_t ho = (task / blocks) % H_out;
      const int64_t b = task / (blocks * H_out);
      const int64_t j0 = blk * kColumnBlock;
      const int64_t j1 = std::min(j0 + kColumnBlock, p.N);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      acc_t* gpart = partial.data() + task * p.X;
      const int64_t* slot_of = p.slot_of + b * p.N;
      const int64_t h_begin = fused ? 0 : ho;
      const int64_t h_end = fused ? p.H : ho + 1;
      for (int64_t h = h_begin; h < h_end; ++h) {
        const acc_t wh = fused ? p.head_weights[h] : acc_t(1);
        if (wh == acc_t(0)) continue;
        // Band rows whose window reaches columns [j0, j1).
        const int64_t i_begin = std::max<int64_t>(0, j0 - p.hw);
        const int64_t i_end = std::min(p.N, j1 + p.hw);
        for (int64_t i = i_begin; i < i_end; ++i) {
          if (slot_of[i] >= 0) continue;  // global rows: see below
          const acc_t r = wh * row_weight(p, b, i);
          const scalar_t* row = local_ptr(p, b, h, i);
          const int64_t jlo = std::max(j0, i - p.hw);
          const int64_t jhi = std::min(j1, i + p.hw + 1);
          // k = j - i + hw, so the band element of column j is at X + k.
          const scalar_t* band = row + (p.X - i + p.hw) * p.ls_k;
          acc_t* a = acc.data() - j0;
          if (p.ls_k == 1) {
            for (int64_t j = jlo; j < jhi; ++j) a[j] += r * acc_t(band[j]);
          } else {
            for (int64_t j = jlo; j < jhi; ++j) {
              a[j] += r * acc_t(band[j * p.ls_k]);
            }
          }
          if (i >= j0 && i < j1) {  // this row's global-slot entries
            for (int64_t m = 0; m < p.X; ++m) {
              if (p.global_pos[b * p.X + m] >= 0) {
                gpart[m] += r * acc_t(row[m * p.ls_k]);
              }
            }
          }
        }
        // Rows of the global tokens: A[g_m, j] = global[b, h, j, m].
        for (int64_t m = 0; m < p.X; ++m) {
          const int64_t g = p.global_pos[b * p.X + m];
          if (g < 0) continue;
          const acc_t r = wh * row_weight(p, b, g);
          for (int64_t j = j0; j < j1; ++j) {
            acc[j - j0] += r * acc_t(global_ptr(p, b, h, j)[m * p.gs_m]);
          }
        }
      }
      std::copy(acc.begin(), acc.begin() + (j1 - j0),
                out + (b * H_out + ho) * p.N + j0);
    }
  });

  if (p.X == 0) return;
  at::parallel_for(0, p.B * H_out, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H_out;
      for (int64_t m = 0; m < p.X; ++m) {
        const int64_t g = p.global_pos[b * p.X + m];
        if (g < 0) continue;
        acc_t total = acc_t(0);
        for (int64_t blk = 0; blk < blocks; ++blk) {
          total += partial[(bh * blocks + blk) * p.X + m];
        }
        out[bh * p.N + g] += total;
      }
    }
  });
}

at::Tensor attention_received_cpu(const at::Tensor& local_attn,
                                  const std::optional<at::Tensor>& global_attn,
                                  const std::optional<at::Tensor>& global_attention_mask,
                                  const std::optional<at::Tensor>& head_weights,
                                  const std::optional<at::Tensor>& row_weights) {
  const Prepared prep = prepare(local_attn, global_attn, global_attention_mask,
                                head_weights, row_weights);
  const auto acc_type = at::toOpMathType(local_attn.scalar_type());
  at::Tensor acc = at::zeros(received_shape(prep),
                             local_attn.options().dtype(acc_type));
  if (acc.numel() == 0) return acc.to(local_attn.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, local_attn.scalar_type(), "attention_received_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        received_cpu_kernel(band_params<scalar_t, acc_t>(prep),
                            acc.mutable_data_ptr<acc_t>());
      });
  return acc.to(local_attn.scalar_type());
}

template <typename scalar_t, typename acc_t>
void dense_cpu_kernel(const BandParams<scalar_t, acc_t>& p, scalar_t* out) {
  // One task per output row: zero outside the band, copy the band, add the
  // global columns (or copy the global row).
  at::parallel_for(0, p.B * p.H * p.N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row_index = begin; row_index < end; ++row_index) {
      const int64_t i = row_index % p.N;
      const int64_t h = (row_index / p.N) % p.H;
      const int64_t b = row_index / (p.N * p.H);
      scalar_t* dst = out + row_index * p.N;
      const int64_t row_slot = p.slot_of[b * p.N + i];
      if (row_slot >= 0) {
        const scalar_t* src = p.global + b * p.gs_b + h * p.gs_h + row_slot * p.gs_m;
        for (int64_t j = 0; j < p.N; ++j) dst[j] = src[j * p.gs_j];
        continue;
      }
      const scalar_t* row = local_ptr(p, b, h, i);
      const int64_t jlo = std::max<int64_t>(0, i - p.hw);
      const int64_t jhi = std::min(p.N, i + p.hw + 1);
      std::memset(dst, 0, sizeof(scalar_t) * jlo);
      std::memset(dst + jhi, 0, sizeof(scalar_t) * (p.N - jhi));
      const scalar_t* band = row + (p.X - i + p.hw) * p.ls_k;
      if (p.ls_k == 1) {
        std::copy(band + jlo, band + jhi, dst + jlo);
      } else {
        for (int64_t j = jlo; j < jhi; ++j) dst[j] = band[j * p.ls_k];
      }
      for (int64_t m = 0; m < p.X; ++m) {
        const int64_t g = p.global_pos[b * p.X + m];
        if (g < 0) continue;
        dst[g] = static_cast<scalar_t>(acc_t(dst[g]) + acc_t(row[m * p.ls_k]));
      }
    }
  });
}

at::Tensor band_to_dense_cpu(const at::Tensor& local_attn,
                             const std::optional<at::Tensor>& global_attn,
                             const std::optional<at::Tensor>& global_attention_mask) {
  const Prepared prep = prepare(local_attn, global_attn, global_attention_mask,
                                std::nullopt, std::nullopt);
  at::Tensor out = at::empty({prep.B, prep.H, prep.N, prep.N}, local_attn.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, local_attn.scalar_type(), "band_to_dense_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        dense_cpu_kernel(band_params<scalar_t, acc_t>(prep),
                         out.mutable_data_ptr<scalar_t>());
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) {
  m.impl("band_to_dense", &band_to_dense_cpu);
  m.impl("attention_received", &attention_received_cpu);
}

}  // namespace pyattn
