// The kernels for CPUs with AVX2 + FMA: explicit vector code for float32 kNN, MMD and
// LISI's exp (simd.hpp + simd_avx2.hpp), everything else auto-vectorised for AVX2.
// Only cellsynth's own functions below the pragma are built for AVX2 (prelude.hpp);
// bindings.cpp calls them only on a CPU that has it.
#include "cellsynth/prelude.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CELLSYNTH_ISA avx2
#include "cellsynth/simd.hpp"
#include "cellsynth/simd_avx2.hpp"
#define CELLSYNTH_SIMD Avx2
#include "cellsynth/kernels.hpp"
#pragma GCC pop_options

#include "cellsynth/isa_table.hpp"
