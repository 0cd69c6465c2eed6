# Dependency lookup: LibTorch (from the project venv's torch wheel unless CMAKE_PREFIX_PATH names
# another), Protobuf and ONNX (Debian), yaml-cpp, nlohmann-json, CLI11, zlib, libjpeg-turbo,
# libpng, ICU, libcurl, GTest; the library's own ones through cmake/latheDependencies.cmake.

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

# The library's own dependencies (Torch, Protobuf, ONNX, yaml-cpp, nlohmann-json, zlib,
# libjpeg-turbo, libpng, ICU, and the lathe::torch / lathe::fmt targets) are one list,
# cmake/latheDependencies.cmake, which the installed package config reads too: a dependency of
# the library goes there (one line), a build-only one (CLI11, GTest, gloo headers) here.
macro(lathe_find)
  find_package(${ARGN} REQUIRED)
endmacro()
macro(lathe_find_pkg prefix module)
  pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET ${module})
endmacro()
include(${CMAKE_CURRENT_LIST_DIR}/latheDependencies.cmake)
# What the package config will define again; cmake/Install.cmake refuses a library dependency
# found anywhere else.
get_directory_property(LATHE_PACKAGE_TARGETS IMPORTED_TARGETS)
find_package(CLI11 REQUIRED)

# Binaries find LibTorch and the pip nvidia-* libraries (CUDA runtime) through their RPATH, built
# and installed, so nothing needs the toolkit at run time.
get_filename_component(_lathe_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
file(GLOB _lathe_nvidia_lib_dirs LIST_DIRECTORIES true "${_lathe_torch_lib_dir}/../../nvidia/*/lib")
set(CMAKE_BUILD_RPATH ${_lathe_torch_lib_dir} ${_lathe_nvidia_lib_dirs})
set(CMAKE_INSTALL_RPATH ${_lathe_torch_lib_dir} ${_lathe_nvidia_lib_dirs})
set(LATHE_TORCH_LIB_DIR "${_lathe_torch_lib_dir}")
get_filename_component(LATHE_TORCH_INCLUDE_DIR "${_lathe_torch_lib_dir}/../include" ABSOLUTE)

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
