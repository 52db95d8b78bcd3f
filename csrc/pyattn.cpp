// Op schemas (declared once; kernels attach per backend in cpu/ and cuda/),
// build-information ops and the Python module init for `pyattn._C`.
#include <ATen/Parallel.h>
#include <Python.h>
#include <torch/library.h>

#include <mutex>
#include <set>
#include <thread>

extern "C" {
// Importing pyattn._C loads this library, which registers the ops below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr,
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace pyattn {

bool has_cuda_kernels() {
#ifdef PYATTN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// How many distinct threads at::parallel_for used on a range of `n` tasks:
// proves the build really runs its CPU kernels in parallel (OpenMP on).
int64_t parallel_threads_used(int64_t n) {
  std::mutex mu;
  std::set<std::thread::id> ids;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    volatile double sink = 0;
    for (int64_t i = begin; i < end; ++i) {
      for (int k = 0; k < 200000; ++k) sink = sink + k;
    }
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(ids.size());
}

TORCH_LIBRARY(pyattn, m) {
  m.def(
      "band_to_dense(Tensor local_attn, Tensor? global_attn, "
      "Tensor? global_attention_mask) -> Tensor");
  m.def(
      "attention_received(Tensor local_attn, Tensor? global_attn, "
      "Tensor? global_attention_mask, Tensor? head_weights, "
      "Tensor? row_weights, ScalarType? out_dtype=None) -> Tensor");
  m.def(
      "attention_received_qk(Tensor q, Tensor k, float scale, Tensor? key_mask, "
      "int window_left, int window_right, bool causal, Tensor? global_mask, "
      "Tensor? head_weights, Tensor? row_weights) -> Tensor");
  m.def("has_cuda_kernels() -> bool", &has_cuda_kernels);
  m.def("parallel_threads_used(int n) -> int", &parallel_threads_used);
}

}  // namespace pyattn
