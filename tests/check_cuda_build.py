"""CI check, run where no GPU is: the installed pyattn was built with CUDA and
every op has a CUDA kernel registered with the dispatcher."""

import sys

import torch

import pyattn

OPS = ("band_to_dense", "attention_received", "attention_received_qk")

problems = []
if torch.version.cuda is None:
    problems.append(f"torch {torch.__version__} has no CUDA")
if not pyattn.has_cuda_kernels():
    problems.append("pyattn.has_cuda_kernels() is False: the build left the CUDA kernels out")
for op in OPS:
    for key in ("CPU", "CUDA"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"pyattn::{op}", key):
            problems.append(f"pyattn::{op} has no {key} kernel")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), pyattn from {pyattn.__file__}")
if problems:
    print("CUDA build check FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"CUDA build check passed: {', '.join(OPS)} have CPU and CUDA kernels")
