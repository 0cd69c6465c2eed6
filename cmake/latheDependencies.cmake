# The dependencies of the lathe library, in one list that lathe's own build (cmake/Dependencies.cmake)
# and an installed lathe's latheConfig.cmake both read: what the library links is found again, the
# same way, by every project that links lathe::lathe. Adding a dependency is one line here.
#
# The includer defines two macros: lathe_find(<Package> [version] [args]) (find_package ... REQUIRED
# in the build, find_dependency in the package config) and lathe_find_pkg(<PREFIX> <module>)
# (pkg-config: the imported target PkgConfig::<PREFIX>). LATHE_TORCH_HINT may name a folder that
# holds TorchConfig.cmake (the package config sets it to the Torch_DIR lathe was built with).

# The torch wheel is a CUDA build: its CMake config needs nvcc and the toolkit, not a GPU.
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "nvcc used by Torch's config")
  set(CUDAToolkit_ROOT /usr/local/cuda CACHE PATH "CUDA toolkit")
endif()
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "9.0" CACHE STRING "CUDA archs (H100/H200); set so nothing probes a GPU")
endif()

# Protobuf before Torch: Torch's config otherwise defines a dummy protobuf::libprotobuf.
lathe_find(Protobuf)
if(LATHE_TORCH_HINT)
  lathe_find(Torch 2.11 HINTS "${LATHE_TORCH_HINT}")
else()
  lathe_find(Torch 2.11)
endif()
lathe_find(ONNX)
lathe_find(yaml-cpp)
lathe_find(nlohmann_json 3.10)
lathe_find(ZLIB)
lathe_find(PkgConfig)
lathe_find_pkg(TURBOJPEG libturbojpeg)
lathe_find_pkg(LIBJPEG libjpeg)      # libjpeg-turbo's libjpeg API: decoding a window of a JPEG
lathe_find_pkg(LIBPNG libpng)
lathe_find_pkg(ICU icu-uc)   # Unicode normalisation for WordPiece
lathe_find_pkg(ICUI18N icu-i18n)   # ICU regular expressions: tokenizers' pre-tokenizer patterns
lathe_find(CURL)   # MLflow tracking over HTTP (trainer.mlflow)
# Gradient-boosted trees and forests: Debian's libxgboost-dev 1.7.4, the version the Python
# oracle (scripts/requirements.txt: xgboost==1.7.4) must match for the parity tests. Through
# pkg-config: Debian's CMake file for it also wants the xgboost command-line package.
lathe_find_pkg(XGBOOST xgboost>=1.7)
# Support-vector machines: Debian's libsvm-dev (LIBSVM 3.24) has no CMake or pkg-config file.
if(NOT TARGET lathe::svm)
  find_path(LATHE_SVM_INCLUDE_DIR libsvm/svm.h REQUIRED)
  find_library(LATHE_SVM_LIBRARY svm REQUIRED)
  add_library(lathe::svm UNKNOWN IMPORTED)
  set_target_properties(lathe::svm PROPERTIES IMPORTED_LOCATION "${LATHE_SVM_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${LATHE_SVM_INCLUDE_DIR}")
endif()

# lathe::torch — LibTorch's libraries without nvrtc (which we never call and which would tie our
# binaries to the toolkit's copy). The CUDA runtime libraries resolve through torch's own RPATH to
# the pip nvidia-* packages. libtorch.so exports its own (static) copies of std::filesystem
# functions, and some of them crash when called from our code (remove_all jumps to a null
# pointer): libstdc++ goes first in the link line so the dynamic linker binds those symbols to
# the system libstdc++.so.6. An imported target, so that an installed lathe's exported targets
# name it and the package config makes it again over the Torch it finds.
if(NOT TARGET lathe::torch)
  add_library(lathe::torch INTERFACE IMPORTED)
  set(_lathe_torch_libs ${TORCH_LIBRARIES})
  list(FILTER _lathe_torch_libs EXCLUDE REGEX "nvrtc")
  target_link_libraries(lathe::torch INTERFACE
    "-Wl,--push-state,--no-as-needed" stdc++ "-Wl,--pop-state" ${_lathe_torch_libs})
endif()

# lathe::fmt — the torch wheel ships fmt 12 headers in its include folder, which every
# translation unit sees before /usr/include. We use exactly those, header-only, and never link
# Debian's libfmt.so.9 (mixing the two gives "undefined reference to fmt::v9::vformat"-style
# failures). lathe's public headers include <fmt/format.h>, so its users need this too.
if(NOT TARGET lathe::fmt)
  add_library(lathe::fmt INTERFACE IMPORTED)
  target_compile_definitions(lathe::fmt INTERFACE FMT_HEADER_ONLY=1)
endif()
