// Input-check macros over TORCH_CHECK. Every message says what was expected
// and what came, naming the argument (see flash-attention's csrc checks).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#define PYATTN_CHECK_DIM(t, name, n, layout)                                  \
  TORCH_CHECK((t).dim() == (n), name " must be " #n "-D " layout ", got ",    \
              (t).dim(), "-D tensor of shape ", (t).sizes())

#define PYATTN_CHECK_SIZE(t, name, d, expected, what)                         \
  TORCH_CHECK((t).size(d) == (expected), name " has shape ", (t).sizes(),     \
              " but its dimension ", d, " (" what ") must be ", (expected),    \
              " to match local_attn")

#define PYATTN_CHECK_FLOATING(t, name)                                        \
  TORCH_CHECK(at::isFloatingType((t).scalar_type()), name                     \
              " must be float16, bfloat16, float32 or float64, got ",         \
              (t).scalar_type())

#define PYATTN_CHECK_SAME_DEVICE(t, name, ref)                                \
  TORCH_CHECK((t).device() == (ref).device(), name " is on ", (t).device(),   \
              " but local_attn is on ", (ref).device(),                       \
              "; all arguments must be on one device")

// The same checks against another reference argument (`ref`, its name).
#define PYATTN_CHECK_SIZE_AS(t, name, d, expected, what, ref)                 \
  TORCH_CHECK((t).size(d) == (expected), name " has shape ", (t).sizes(),     \
              " but its dimension ", d, " (" what ") must be ", (expected),    \
              " to match " ref)

#define PYATTN_CHECK_DEVICE_AS(t, name, ref_t, ref)                           \
  TORCH_CHECK((t).device() == (ref_t).device(), name " is on ", (t).device(), \
              " but " ref " is on ", (ref_t).device(),                        \
              "; all arguments must be on one device")
