// What every instruction-set build of the kernels includes *before* its
// `#pragma GCC target` (cpp/isa_*.cpp): the standard library, the intrinsics and
// OpenMP compiled for the baseline, so the only code built for AVX2 or AVX-512 is
// cellsynth's own, in its own namespace (no shared template is ever compiled twice
// for different CPUs).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "dispatch.hpp"
#include "mmd_scales.hpp"
