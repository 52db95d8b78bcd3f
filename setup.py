"""Build pyattn and its compiled extension ``pyattn._C``.

CPU kernels are always built, with OpenMP so that ``at::parallel_for`` runs in
parallel. CUDA kernels are added when torch has CUDA and nvcc is found, or when
``FORCE_CUDA=1`` (then a missing toolchain is an error, not a silent CPU-only
build). ``FORCE_CPU=1`` skips CUDA. Build against the torch you run with:
``pip install --no-build-isolation -e .``.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_namespace_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
    )
except ImportError:  # pragma: no cover - the message is the point
    sys.exit(
        "pyattn builds a torch extension and needs torch installed first, and a "
        "build without isolation so that it builds against that torch:\n"
        "    pip install torch && pip install --no-build-isolation .\n"
        "(`make test` does both.)"
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _cuda_home() -> str | None:
    """CUDA_HOME, where nvcc on PATH lives outside it (e.g. /usr/local/bin/nvcc
    makes torch guess /usr/local, which has no lib64/libcudart)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    for candidate in ("/usr/local/cuda", CUDA_HOME):
        if candidate and os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return CUDA_HOME


def _want_cuda() -> bool:
    if _flag("FORCE_CPU"):
        return False
    nvcc_found = shutil.which("nvcc") is not None or (
        _cuda_home() is not None and os.path.exists(os.path.join(_cuda_home(), "bin", "nvcc"))
    )
    if _flag("FORCE_CUDA"):
        problems = []
        if torch.version.cuda is None:
            problems.append(
                f"the installed torch {torch.__version__} has no CUDA support "
                "(install a CUDA build of torch)"
            )
        if not nvcc_found:
            problems.append("nvcc was not found (put it on PATH or set CUDA_HOME)")
        if problems:
            sys.exit("FORCE_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(problems))
        return True
    return torch.version.cuda is not None and nvcc_found


def _openmp_flags() -> list[str]:
    info = torch.__config__.parallel_info()
    if "backend: OpenMP" in info and sys.platform != "win32":
        return ["-fopenmp", "-DAT_PARALLEL_OPENMP=1"]
    return []


def extensions():
    with_cuda = _want_cuda()
    sources = [os.path.join("csrc", "pyattn.cpp"), os.path.join("csrc", "layers.cpp")]
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx = ["-O3", *_openmp_flags()]
    define_macros = []
    if with_cuda:
        home = _cuda_home()
        if home:
            os.environ["CUDA_HOME"] = home
            import torch.utils.cpp_extension as cpp_ext

            cpp_ext.CUDA_HOME = home
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("PYATTN_WITH_CUDA", None))
        return [
            CUDAExtension(
                "pyattn._C",
                sources,
                define_macros=define_macros,
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
            )
        ]
    return [
        CppExtension(
            "pyattn._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx},
        )
    ]


setup(
    # namespace discovery, so that data-only folders (the demo model) are
    # packages too and setuptools has nothing to warn about
    packages=find_namespace_packages(include=["pyattn", "pyattn.*"], exclude=["*.__pycache__"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
)
