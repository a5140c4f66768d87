// cellsynth native kernels: exact kNN, fused multi-scale RBF MMD, LISI.
//
// Plain C++17 + OpenMP, no Python. The binding (cpp/bindings.cpp) checks and
// converts arrays; the NumPy/torch reference (cellsynth/metrics/_reference.py)
// is what these are tested against.
//
// This file is compiled once per instruction set (cpp/isa_*.cpp), each time into its
// own namespace cellsynth::CELLSYNTH_ISA; where CELLSYNTH_SIMD names a vector-traits
// type (simd_avx2.hpp, simd_avx512.hpp), float32 kNN and MMD and LISI's exp go through
// the explicit vector code of simd.hpp, and these portable templates serve the rest.
//
// Distances use a register-blocked tile: a block of QB query rows against a
// packed, transposed tile of TB reference rows, so the inner
// loop is a broadcast-FMA over contiguous memory. kNN keeps k + margin candidates
// by tile distance and re-ranks them with exact double distances. MMD never holds
// an N x N matrix: each tile's distances are turned into kernel values and summed
// in double on the fly.
#pragma once

#ifndef CELLSYNTH_ISA
#error "define CELLSYNTH_ISA (the namespace of this instruction-set build) before including kernels.hpp"
#endif

namespace cellsynth {
namespace CELLSYNTH_ISA {

constexpr int QB = 4;     // query rows per micro-kernel
constexpr int VB = 16;    // reference rows per micro-kernel (2 AVX2 registers)
constexpr int TB = 256;   // reference rows per packed tile

// Distances are accumulated in the input's own precision: float for float32 input
// (fast), double for float64 input (agrees with a float64 reference to ~1e-12).

// Pack rows [r0, r0 + nr) of x (n x d, row-major) transposed into out[d][TB].
template <typename T>
inline void pack_tile(const T* x, int64_t d, int64_t r0, int64_t nr, T* out) {
  for (int64_t j = 0; j < d; ++j) {
    T* o = out + j * TB;
    for (int64_t t = 0; t < nr; ++t) o[t] = x[(r0 + t) * d + j];
    for (int64_t t = nr; t < TB; ++t) o[t] = T(0);
  }
}

// dots[r][t] = <q_r, x_t> for QB query rows against one packed tile.
template <typename T>
inline void dot_block(const T* const* q, const T* tile, int64_t d, T (*dots)[TB]) {
  for (int t0 = 0; t0 < TB; t0 += VB) {
    T c[QB][VB] = {};
    for (int64_t j = 0; j < d; ++j) {
      const T* xt = tile + j * TB + t0;
      for (int r = 0; r < QB; ++r) {
        const T a = q[r][j];
#pragma omp simd
        for (int u = 0; u < VB; ++u) c[r][u] += a * xt[u];
      }
    }
    for (int r = 0; r < QB; ++r)
      for (int u = 0; u < VB; ++u) dots[r][t0 + u] = c[r][u];
  }
}

// Squared distance in double (the lanes' partial sums added at the end: the order of a
// vector reduction, which OpenMP's simd reduction allows the compiler to pick).
template <typename T>
inline double exact_sqdist(const T* a, const T* b, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < d; ++j) {
    const double v = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    s += v * v;
  }
  return s;
}

template <typename T>
inline std::vector<T> row_sqnorms(const T* x, int64_t n, int64_t d) {
  std::vector<T> out(n);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) s += static_cast<double>(x[i * d + j]) * x[i * d + j];
    out[i] = static_cast<T>(s);
  }
  return out;
}

// All reference rows packed into transposed tiles, one after another (zero-padded).
template <typename T>
inline std::vector<T> pack_all(const T* x, int64_t n, int64_t d) {
  const int64_t ntiles = (n + TB - 1) / TB;
  std::vector<T> packed(static_cast<size_t>(ntiles) * d * TB);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < ntiles; ++b) pack_tile(x, d, b * TB, std::min<int64_t>(TB, n - b * TB), packed.data() + b * d * TB);
  return packed;
}

// Copy query rows [r0, r0 + nr) into qbuf (QB x d, zero rows past nr) and point qp at them.
template <typename T>
inline void load_queries(const T* q, int64_t r0, int nr, int64_t d, T* qbuf, const T** qp) {
  for (int r = 0; r < QB; ++r) {
    T* dst = qbuf + r * d;
    for (int64_t j = 0; j < d; ++j) dst[j] = r < nr ? q[(r0 + r) * d + j] : T(0);
    qp[r] = dst;
  }
}

// The reference row a candidate names: (distance, index) pairs, or the vector paths'
// packed keys (simd::Candidates: index in the low 32 bits).
template <typename T>
inline int64_t index_of(const std::pair<T, int64_t>& c) { return c.second; }
inline int64_t index_of(uint64_t key) { return static_cast<int64_t>(key & 0xFFFFFFFFu); }

// Re-rank query qi's candidates by exact double distance and write its k nearest.
template <typename T, typename C>
inline void rerank(const T* x, const T* q, int64_t d, int64_t qi, const std::vector<C>& cand, int k, double* out_d, int64_t* out_i) {
  std::vector<std::pair<double, int64_t>> exact;
  exact.reserve(cand.size());
  for (const auto& c : cand) exact.emplace_back(exact_sqdist(q + qi * d, x + index_of(c) * d, d), index_of(c));
  std::sort(exact.begin(), exact.end());
  for (int j = 0; j < k; ++j) {
    out_d[qi * k + j] = exact[j].first;
    out_i[qi * k + j] = exact[j].second;
  }
}

// Exact k nearest neighbours of each query row among the rows of x.
// self_query: q == x and a point is not its own neighbour. Outputs are m x k,
// squared Euclidean distances (double) and indices, nearest first.
template <typename T>
void knn(const T* x, int64_t n, const T* q, int64_t m, int64_t d, int k, bool self_query, double* out_d, int64_t* out_i) {
  if (m == 0 || k == 0) return;
  const int keep = k + 8;  // candidates kept by tile distance before exact re-ranking
#ifdef CELLSYNTH_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (n <= static_cast<int64_t>(0xFFFFFFFFu)) {  // indices fit the candidates' 32-bit key field
      simd::knn_candidates<CELLSYNTH_SIMD>(x, n, q, m, d, keep, self_query, [&](int64_t qi, const std::vector<uint64_t>& cand) {
        rerank(x, q, d, qi, cand, k, out_d, out_i);
      });
      return;
    }
  }
#endif
  const std::vector<T> xn = row_sqnorms(x, n, d);
  const std::vector<T> qn = self_query ? xn : row_sqnorms(q, m, d);
  const int64_t ntiles = (n + TB - 1) / TB;
  const std::vector<T> packed = pack_all(x, n, d);

  const int64_t nqb = (m + QB - 1) / QB;
#pragma omp parallel
  {
    std::vector<T> qbuf(static_cast<size_t>(QB) * d, T(0));
    alignas(64) T dots[QB][TB];
    std::vector<std::vector<std::pair<T, int64_t>>> cand(QB);
#pragma omp for schedule(dynamic, 4)
    for (int64_t blk = 0; blk < nqb; ++blk) {
      const int64_t r0 = blk * QB;
      const int nr = static_cast<int>(std::min<int64_t>(QB, m - r0));
      const T* qp[QB];
      load_queries(q, r0, nr, d, qbuf.data(), qp);
      for (int r = 0; r < QB; ++r) cand[r].clear();
      T worst[QB];
      for (int r = 0; r < QB; ++r) worst[r] = std::numeric_limits<T>::infinity();
      for (int64_t b = 0; b < ntiles; ++b) {
        dot_block(qp, packed.data() + b * d * TB, d, dots);
        const int64_t c0 = b * TB;
        const int64_t nc = std::min<int64_t>(TB, n - c0);
        for (int r = 0; r < nr; ++r) {
          const int64_t qi = r0 + r;
          auto& cr = cand[r];
          for (int64_t t = 0; t < nc; ++t) {
            const int64_t xi = c0 + t;
            if (self_query && xi == qi) continue;
            const T dist = qn[qi] + xn[xi] - T(2) * dots[r][t];
            if (static_cast<int>(cr.size()) < keep) {
              cr.emplace_back(dist, xi);
              if (static_cast<int>(cr.size()) == keep) {
                std::make_heap(cr.begin(), cr.end());
                worst[r] = cr.front().first;
              }
            } else if (dist < worst[r]) {
              std::pop_heap(cr.begin(), cr.end());
              cr.back() = {dist, xi};
              std::push_heap(cr.begin(), cr.end());
              worst[r] = cr.front().first;
            }
          }
        }
      }
      for (int r = 0; r < nr; ++r) rerank(x, q, d, r0 + r, cand[r], k, out_d, out_i);
    }
  }
}

// Sum over all pairs (a in A, b in B) of sum_s exp(-|a-b|^2 * inv[s]), in double.
// same: A == B, and the diagonal is skipped unless include_diag.
template <typename T>
double kernel_sum(const T* a, int64_t na, const T* b, int64_t nb, int64_t d, const RbfScales& scales, bool same, bool include_diag) {
#ifdef CELLSYNTH_SIMD
  if constexpr (std::is_same_v<T, float>) return simd::kernel_sum<CELLSYNTH_SIMD>(a, na, b, nb, d, scales, same, include_diag);
#endif
  const std::vector<T> an = row_sqnorms(a, na, d);
  const std::vector<T> bn = same ? an : row_sqnorms(b, nb, d);
  const int64_t ntiles = (nb + TB - 1) / TB;
  const std::vector<T> packed = pack_all(b, nb, d);
  const std::vector<double>& inv2s2 = scales.inv;
  const int ns = static_cast<int>(inv2s2.size());
  const bool ladder = scales.ladder;
  const int64_t nqb = (na + QB - 1) / QB;
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    std::vector<T> qbuf(static_cast<size_t>(QB) * d, T(0));
    alignas(64) T dots[QB][TB];
#pragma omp for schedule(dynamic, 4)
    for (int64_t blk = 0; blk < nqb; ++blk) {
      const int64_t r0 = blk * QB;
      const int nr = static_cast<int>(std::min<int64_t>(QB, na - r0));
      const T* qp[QB];
      load_queries(a, r0, nr, d, qbuf.data(), qp);
      for (int64_t t = 0; t < ntiles; ++t) {
        dot_block(qp, packed.data() + t * d * TB, d, dots);
        const int64_t c0 = t * TB;
        const int64_t nc = std::min<int64_t>(TB, nb - c0);
        for (int r = 0; r < nr; ++r) {
          const int64_t ai = r0 + r;
          double row = 0.0;
          for (int64_t u = 0; u < nc; ++u) {
            if (same && !include_diag && c0 + u == ai) continue;
            const T dist = std::max(T(0), an[ai] + bn[c0 + u] - T(2) * dots[r][u]);
            if (ladder) {
              // scales sigma_max / 2^s: exp(-d inv_s) = u^(4^s), one exp in double
              double e = std::exp(-static_cast<double>(dist) * inv2s2[0]);
              double kv = e;
              for (int s = 1; s < ns; ++s) {
                e *= e;
                e *= e;
                kv += e;
              }
              row += kv;
            } else {
              // exp in double for float input too: float32 products, float64 kernel values
              double kv = 0.0;
              for (int s = 0; s < ns; ++s) kv += std::exp(-static_cast<double>(dist) * inv2s2[s]);
              row += kv;
            }
          }
          total += row;
        }
      }
    }
  }
  return total;
}

template <typename T>
double mmd(const T* x, int64_t n, const T* y, int64_t m, int64_t d, const std::vector<double>& sigmas, bool biased) {
  const RbfScales s = rbf_scales(sigmas);
  const double kxx = kernel_sum(x, n, x, n, d, s, true, biased);
  const double kyy = kernel_sum(y, m, y, m, d, s, true, biased);
  const double kxy = kernel_sum(x, n, y, m, d, s, false, true);
  return mmd_from_sums(kxx, kyy, kxy, n, m, biased);
}

// Per-cell LISI from a kNN result (scib / harmony compute_simpson_index).
// dist: n x k plain (not squared) distances; idx: n x k; labels: integer codes.
inline void lisi(const double* dist, const int64_t* idx, int64_t n, int k, const int64_t* labels, int64_t n_labels, double perplexity, double* out, int n_iter = 50, double tol = 1e-5) {
  const double logu = std::log(perplexity);
#pragma omp parallel
  {
    std::vector<double> p(k), mass(n_labels);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const double* di = dist + i * k;
      double beta = 1.0, lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
      for (int it = 0; it < n_iter; ++it) {
#ifdef CELLSYNTH_SIMD
        const auto [sp, sdp] = simd::exp_row<CELLSYNTH_SIMD>(di, k, beta, p.data());
#else
        double sp = 0.0, sdp = 0.0;
        for (int j = 0; j < k; ++j) {
          p[j] = std::exp(-di[j] * beta);
          sp += p[j];
          sdp += di[j] * p[j];
        }
#endif
        double h;
        if (sp == 0.0) {
          h = 0.0;
          for (int j = 0; j < k; ++j) p[j] = 1.0 / k;
        } else {
          h = std::log(sp) + beta * sdp / sp;
          for (int j = 0; j < k; ++j) p[j] /= sp;
        }
        const double diff = h - logu;
        if (std::fabs(diff) < tol) break;
        if (diff > 0) {
          lo = beta;
          beta = std::isinf(hi) ? beta * 2 : (beta + hi) / 2;
        } else {
          hi = beta;
          beta = std::isinf(lo) ? beta / 2 : (beta + lo) / 2;
        }
      }
      std::fill(mass.begin(), mass.end(), 0.0);
      for (int j = 0; j < k; ++j) mass[labels[idx[i * k + j]]] += p[j];
      double simpson = 0.0;
      for (int64_t l = 0; l < n_labels; ++l) simpson += mass[l] * mass[l];
      out[i] = simpson > 0 ? 1.0 / simpson : std::numeric_limits<double>::quiet_NaN();
    }
  }
}

}  // namespace CELLSYNTH_ISA
}  // namespace cellsynth
