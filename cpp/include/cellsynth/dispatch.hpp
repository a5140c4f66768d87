// The native kernels, one table per instruction set, chosen once at import
// (cpp/bindings.cpp): every table holds the same algorithms (kernels.hpp), compiled
// for the portable baseline, for AVX2 + FMA, or for AVX-512 (cpp/isa_*.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace cellsynth {

struct Kernels {
  const char* name;  // "portable", "avx2" or "avx512"
  void (*knn_f32)(const float* x, int64_t n, const float* q, int64_t m, int64_t d, int k, bool self_query, double* out_d, int64_t* out_i);
  void (*knn_f64)(const double* x, int64_t n, const double* q, int64_t m, int64_t d, int k, bool self_query, double* out_d, int64_t* out_i);
  double (*mmd_f32)(const float* x, int64_t n, const float* y, int64_t m, int64_t d, const std::vector<double>& sigmas, bool biased);
  double (*mmd_f64)(const double* x, int64_t n, const double* y, int64_t m, int64_t d, const std::vector<double>& sigmas, bool biased);
  void (*lisi)(const double* dist, const int64_t* idx, int64_t n, int k, const int64_t* labels, int64_t n_labels, double perplexity, double* out);
};

namespace portable {
const Kernels& kernels();
}
#ifdef CELLSYNTH_X86_DISPATCH
namespace avx2 {
const Kernels& kernels();
}
namespace avx512 {
const Kernels& kernels();
}
#endif

}  // namespace cellsynth
