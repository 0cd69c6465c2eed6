// How the zoo's CPU kernels (kernels.cpp, batch_norm.cpp) ask for loops vectorised per CPU.
#pragma once

// A function marked LATHE_VECTOR_CLONES is compiled three times on x86-64 — AVX-512, AVX2 + FMA
// and the baseline — and the loader picks the widest the CPU runs. Its loops must be written for
// the vectoriser (no branches, no library calls; a reduction says so with `#pragma omp simd
// reduction`), which the build runs on these files at -O3 with -fopenmp-simd (CMakeLists.txt).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LATHE_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LATHE_VECTOR_CLONES
#endif
