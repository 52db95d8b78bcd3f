// attention_received_layers: every layer of a Longformer output in one call.
//
// A composite of the per-layer op (registered for CompositeImplicitAutograd,
// so autograd, the CPU and CUDA kernels and the fake kernels all come from
// attention_received): layers may have different windows, so their bands
// cannot be stacked; the results (L, B, H, N) or (L, B, N) can. No host
// synchronisation beyond what the per-layer op does (none on CUDA).
#include <torch/library.h>
#include <ATen/ATen.h>

#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace pyattn {
namespace {

at::Tensor attention_received_layers(
    at::TensorList local_attn, const c10::List<std::optional<at::Tensor>>& global_attn,
    const std::optional<at::Tensor>& global_attention_mask,
    const std::optional<at::Tensor>& head_weights,
    const std::optional<at::Tensor>& row_weights,
    std::optional<at::ScalarType> out_dtype) {
  const int64_t L = static_cast<int64_t>(local_attn.size());
  TORCH_CHECK(L > 0, "local_attn is empty: expected one (B, H, N, X + w + 1) "
              "tensor per layer");
  TORCH_CHECK(global_attn.size() == 0 || static_cast<int64_t>(global_attn.size()) == L,
              "local_attn has ", L, " layers but global_attn has ",
              global_attn.size(), "; pass both from the same model output "
              "(or an empty list when no token is global)");
  const bool has_heads = head_weights.has_value() && head_weights->defined();
  if (has_heads) {
    TORCH_CHECK(head_weights->dim() == 2 && head_weights->size(0) == L,
                "head_weights must have shape (L, H) with L = ", L,
                " layers, got shape ", head_weights->sizes());
  }
  const bool has_rows = row_weights.has_value() && row_weights->defined();
  if (has_rows) {
    TORCH_CHECK(row_weights->dim() == 2 || (row_weights->dim() == 3 && row_weights->size(0) == L),
                "row_weights must have shape (B, N) (every layer) or (L, B, N) "
                "with L = ", L, ", got shape ", row_weights->sizes());
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pyattn::attention_received", "")
                             .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&,
                                               const std::optional<at::Tensor>&,
                                               const std::optional<at::Tensor>&,
                                               const std::optional<at::Tensor>&,
                                               std::optional<at::ScalarType>)>();
  std::vector<at::Tensor> out;
  out.reserve(L);
  for (int64_t l = 0; l < L; ++l) {
    const std::optional<at::Tensor> glob =
        global_attn.size() == 0 ? std::nullopt : global_attn.get(l);
    const std::optional<at::Tensor> heads =
        has_heads ? std::optional<at::Tensor>(head_weights->select(0, l)) : std::nullopt;
    const std::optional<at::Tensor> rows =
        !has_rows ? std::nullopt
                  : std::optional<at::Tensor>(row_weights->dim() == 3 ? row_weights->select(0, l)
                                                                     : *row_weights);
    try {
      out.push_back(op.call(local_attn[l], glob, global_attention_mask, heads, rows, out_dtype));
    } catch (const c10::Error& error) {
      TORCH_CHECK(false, "layer ", l, " (0-based; local_attn[", l, "]): ",
                  error.what_without_backtrace());
    } catch (const std::exception& error) {
      // The per-layer op's autograd kernel is Python (pyattn/kernels/ops.py): its
      // errors arrive as pybind11 errors, "RuntimeError: message\n\nAt: ...".
      std::string message = error.what();
      const auto at = message.find("\n\nAt:");
      if (at != std::string::npos) message.resize(at);
      const std::string prefix = "RuntimeError: ";
      if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
      TORCH_CHECK(false, "layer ", l, " (0-based; local_attn[", l, "]): ", message);
    }
  }
  // One shape for all layers (the per-layer checks have run): B, H, N agree.
  for (int64_t l = 1; l < L; ++l) {
    TORCH_CHECK(out[l].sizes() == out[0].sizes(), "layer ", l,
                " (0-based) gives attention received of shape ", out[l].sizes(),
                " but layer 0 gives ", out[0].sizes(),
                "; every layer must have the same batch, heads and length");
  }
  return at::stack(out);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyattn, m) {
  m.def(
      "attention_received_layers(Tensor[] local_attn, Tensor?[] global_attn, "
      "Tensor? global_attention_mask, Tensor? head_weights, "
      "Tensor? row_weights, ScalarType? out_dtype=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(pyattn, CompositeImplicitAutograd, m) {
  m.impl("attention_received_layers", &attention_received_layers);
}

}  // namespace pyattn
