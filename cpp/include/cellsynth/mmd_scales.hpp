// What the CPU (kernels.hpp) and CUDA (cuda/kernels.cu) MMD kernels share: the kernel's
// scales as 1 / (2 sigma^2), widest first, whether they form the default power-of-two
// ladder (then one exp per pair, the other scales by squaring), and the estimator
// from the three kernel sums.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace cellsynth {

struct RbfScales {
  std::vector<double> inv;  // 1 / (2 sigma^2), widest first
  bool ladder = false;      // each entry 4x the previous
};

inline RbfScales rbf_scales(const std::vector<double>& sigmas) {
  std::vector<double> sorted(sigmas);
  std::sort(sorted.begin(), sorted.end(), std::greater<double>());
  RbfScales s;
  for (double sg : sorted) s.inv.push_back(1.0 / (2.0 * sg * sg));
  s.ladder = s.inv.size() > 1;
  for (size_t i = 1; i < s.inv.size() && s.ladder; ++i) s.ladder = std::fabs(s.inv[i] / s.inv[i - 1] - 4.0) < 1e-9;
  return s;
}

// Squared MMD from sum k(x, x'), sum k(y, y'), sum k(x, y) (self-pairs excluded from the
// first two unless biased).
inline double mmd_from_sums(double kxx, double kyy, double kxy, int64_t n, int64_t m, bool biased) {
  const double nn = static_cast<double>(n), mm = static_cast<double>(m);
  if (biased) return kxx / (nn * nn) + kyy / (mm * mm) - 2.0 * kxy / (nn * mm);
  return kxx / (nn * (nn - 1)) + kyy / (mm * (mm - 1)) - 2.0 * kxy / (nn * mm);
}

}  // namespace cellsynth
