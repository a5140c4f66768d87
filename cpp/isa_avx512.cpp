// The kernels for CPUs with AVX-512 (F, DQ, BW, VL): explicit vector code for float32
// kNN, MMD and LISI's exp (simd.hpp + simd_avx512.hpp), everything else
// auto-vectorised for AVX-512. Only cellsynth's own functions below the pragma are
// built for AVX-512 (prelude.hpp); bindings.cpp calls them only on a CPU that has it.
#include "cellsynth/prelude.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define CELLSYNTH_ISA avx512
#include "cellsynth/simd.hpp"
#include "cellsynth/simd_avx512.hpp"
#define CELLSYNTH_SIMD Avx512
#include "cellsynth/kernels.hpp"
#pragma GCC pop_options

#include "cellsynth/isa_table.hpp"
