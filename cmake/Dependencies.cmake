# Dependency lookup: LibTorch (from the project venv's torch wheel unless CMAKE_PREFIX_PATH names
# another), Protobuf and ONNX (Debian), yaml-cpp, nlohmann-json, CLI11, zlib, libjpeg-turbo,
# libpng, ICU, libcurl, GTest.

# Where torch lives: an explicit -DCMAKE_PREFIX_PATH wins; else the project venv's wheel.
if(NOT Torch_DIR)
  set(_lathe_venv_python "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  if(EXISTS "${_lathe_venv_python}")
    execute_process(
      COMMAND "${_lathe_venv_python}" -c "import torch, sys; sys.stdout.write(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _lathe_torch_prefix RESULT_VARIABLE _lathe_rc ERROR_QUIET)
    if(_lathe_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_lathe_torch_prefix}")
    endif()
  endif()
endif()

# The torch wheel is a CUDA build: its CMake config needs nvcc and the toolkit, not a GPU.
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "nvcc used by Torch's config")
  set(CUDAToolkit_ROOT /usr/local/cuda CACHE PATH "CUDA toolkit")
endif()
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "9.0" CACHE STRING "CUDA archs (H100/H200); set so nothing probes a GPU")
endif()

# Protobuf before Torch: Torch's config otherwise defines a dummy protobuf::libprotobuf.
find_package(Protobuf REQUIRED)
find_package(Torch 2.11 REQUIRED)
find_package(ONNX REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(ZLIB REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
pkg_check_modules(LIBPNG REQUIRED IMPORTED_TARGET libpng)
pkg_check_modules(ICU REQUIRED IMPORTED_TARGET icu-uc)   # Unicode normalisation for WordPiece
find_package(CURL REQUIRED)   # MLflow tracking over HTTP (trainer.mlflow)

# lathe::torch — LibTorch's libraries without nvrtc (which we never call and which would tie our
# binaries to the toolkit's copy). The CUDA runtime libraries resolve through torch's own RPATH to
# the pip nvidia-* packages; we add those folders to our RPATH too so nothing needs the toolkit at
# run time.
add_library(lathe_torch INTERFACE)
add_library(lathe::torch ALIAS lathe_torch)
set(_lathe_torch_libs ${TORCH_LIBRARIES})
list(FILTER _lathe_torch_libs EXCLUDE REGEX "nvrtc")
# libtorch.so exports its own (static) copies of std::filesystem functions, and some of them crash
# when called from our code (remove_all jumps to a null pointer). libstdc++ goes first in the
# link line so the dynamic linker binds those symbols to the system libstdc++.so.6.
target_link_libraries(lathe_torch INTERFACE
  "-Wl,--push-state,--no-as-needed" stdc++ "-Wl,--pop-state" ${_lathe_torch_libs})
get_filename_component(_lathe_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
file(GLOB _lathe_nvidia_lib_dirs LIST_DIRECTORIES true "${_lathe_torch_lib_dir}/../../nvidia/*/lib")
set(CMAKE_BUILD_RPATH ${_lathe_torch_lib_dir} ${_lathe_nvidia_lib_dirs})
set(LATHE_TORCH_LIB_DIR "${_lathe_torch_lib_dir}")
get_filename_component(LATHE_TORCH_INCLUDE_DIR "${_lathe_torch_lib_dir}/../include" ABSOLUTE)

# fmt: the torch wheel ships fmt 12 headers in its include folder, which every translation unit
# sees before /usr/include. We use exactly those, header-only, and never link Debian's libfmt.so.9
# (mixing the two gives "undefined reference to fmt::v9::vformat"-style failures).
add_library(lathe_fmt INTERFACE)
add_library(lathe::fmt ALIAS lathe_fmt)
target_compile_definitions(lathe_fmt INTERFACE FMT_HEADER_ONLY=1)

# Distributed training (src/dist/process_group.cpp, the only file that includes c10d's backends):
# the torch wheel ships ProcessGroupGloo.hpp and Gloo's compiled code but not gloo/*.h; Debian's
# libgloo-dev provides them (only opaque gloo pointers cross into torch's Gloo, see README).
# nccl.h for ProcessGroupNCCL.hpp comes from the pip nvidia-nccl package beside torch.
find_path(LATHE_GLOO_INCLUDE_DIR gloo/context.h)
if(NOT LATHE_GLOO_INCLUDE_DIR)
  message(FATAL_ERROR "gloo headers (gloo/context.h) not found: install Debian's libgloo-dev "
                      "(scripts/bootstrap.sh does) or pass -DLATHE_GLOO_INCLUDE_DIR=...")
endif()
find_path(LATHE_NCCL_INCLUDE_DIR nccl.h HINTS "${_lathe_torch_lib_dir}/../../nvidia/nccl/include")
if(NOT LATHE_NCCL_INCLUDE_DIR)
  message(FATAL_ERROR "nccl.h not found beside torch (nvidia/nccl/include in the venv): install "
                      "torch with its CUDA dependencies or pass -DLATHE_NCCL_INCLUDE_DIR=...")
endif()
