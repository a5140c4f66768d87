// The dispatch table of one instruction-set build (cpp/isa_*.cpp), included after its
// `#pragma GCC pop_options`: only taking addresses, compiled for the baseline.
#pragma once

#define CELLSYNTH_STR2(x) #x
#define CELLSYNTH_STR(x) CELLSYNTH_STR2(x)

namespace cellsynth {
namespace CELLSYNTH_ISA {

inline void lisi_entry(const double* dist, const int64_t* idx, int64_t n, int k, const int64_t* labels, int64_t n_labels, double perplexity, double* out) {
  lisi(dist, idx, n, k, labels, n_labels, perplexity, out);
}

const Kernels& kernels() {
  static const Kernels table{CELLSYNTH_STR(CELLSYNTH_ISA), &knn<float>, &knn<double>, &mmd<float>, &mmd<double>, &lisi_entry};
  return table;
}

}  // namespace CELLSYNTH_ISA
}  // namespace cellsynth
