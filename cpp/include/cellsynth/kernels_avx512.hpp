// AVX-512 versions of the float32 kNN and MMD kernels and of LISI's inner exp.
//
// Used by kernels.hpp when the compiler targets AVX-512F (the default -march=native
// build on an AVX-512 machine); the portable templates in kernels.hpp remain the
// path everywhere else and for float64 input.
//
// Distances: a GEMM-style micro-kernel. Reference rows are packed in panels of NR = 32
// (panel[j][u] = x[row u][feature j], 64-byte aligned), query rows in blocks of MR = 8
// (block[j][r]); one call keeps the 8 x 32 dot products in 16 zmm accumulators,
// loading two reference vectors and broadcasting eight query values per feature.
// Cache blocking: each thread takes QCHUNK queries and walks the references in tiles
// of TILE_PANELS panels (~200 kB, resident in L2) so the references stream from L3
// once per chunk rather than once per block.
//
// kNN: squared distance = |q|^2 + |x|^2 - 2<q, x>; the 32 candidates of a panel are
// compared with the row's current k+8-th best in one vector compare and only the few
// that beat it reach a scalar buffer (cut back with nth_element when full); the kept candidates are re-ranked with exact
// double distances (kernels.hpp), as in the portable path.
//
// MMD: the same tiles, then exp in double, 8 lanes at a time (Cody-Waite reduction,
// degree-11 polynomial, scalef; ~1e-15 relative), the power-of-two ladder by
// squaring, accumulated in double. A self-sum visits only pairs with col > row and
// doubles them; the diagonal (distance exactly 0) is added analytically.
#pragma once

#if defined(__AVX512F__)
#define CELLSYNTH_AVX512 1

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <utility>
#include <vector>

#include "mmd_scales.hpp"

namespace cellsynth {
namespace avx512 {

constexpr int MR = 8;             // query rows per micro-kernel
constexpr int NR = 32;            // reference rows per panel (two zmm)
constexpr int64_t TILE_PANELS = 32;  // panels per cache tile (1,024 rows)
constexpr int64_t QCHUNK = 128;   // query rows per thread task (multiple of MR)

// 64-byte aligned float buffer.
struct Floats {
  float* p = nullptr;
  explicit Floats(size_t n) {
    const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    p = static_cast<float*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64));
    if (!p) throw std::bad_alloc();
  }
  ~Floats() { std::free(p); }
  Floats(const Floats&) = delete;
  Floats& operator=(const Floats&) = delete;
};

// exp(x) in double for x <= 0 (x below -1000 gives 0).
inline __m512d exp_neg(__m512d x) {
  x = _mm512_max_pd(x, _mm512_set1_pd(-1000.0));
  const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(1.4426950408889634074)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93147180369123816490e-01), x);
  r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10), r);
  // Taylor series to r^11 on |r| <= ln2 / 2 (truncation < 7e-15 relative)
  __m512d p = _mm512_set1_pd(1.0 / 39916800.0);
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 3628800.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 362880.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 40320.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 5040.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 720.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
  return _mm512_scalef_pd(p, n);
}

// Rows of x (n x d) in panels of NR: out[(p * d + j) * NR + u] = x[p * NR + u][j], zero past n.
inline void pack_panels(const float* x, int64_t n, int64_t d, float* out) {
  const int64_t np = (n + NR - 1) / NR;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < np; ++p) {
    float* o = out + p * d * NR;
    for (int u = 0; u < NR; ++u) {
      const int64_t i = p * NR + u;
      for (int64_t j = 0; j < d; ++j) o[j * NR + u] = i < n ? x[i * d + j] : 0.0f;
    }
  }
}

// Query rows [q0, q0 + nq) in blocks of MR: out[(b * d + j) * MR + r], zero rows past nq.
inline void pack_queries(const float* q, int64_t q0, int64_t nq, int64_t d, float* out) {
  const int64_t nb = (nq + MR - 1) / MR;
  for (int64_t b = 0; b < nb; ++b)
    for (int r = 0; r < MR; ++r) {
      const int64_t i = b * MR + r;
      for (int64_t j = 0; j < d; ++j) out[(b * d + j) * MR + r] = i < nq ? q[(q0 + i) * d + j] : 0.0f;
    }
}

// Squared norms, padded to whole panels with `pad`.
inline std::vector<float> sqnorms(const float* x, int64_t n, int64_t d, int64_t padded, float pad) {
  std::vector<float> out(static_cast<size_t>(padded), pad);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) s += static_cast<double>(x[i * d + j]) * x[i * d + j];
    out[i] = static_cast<float>(s);
  }
  return out;
}

// dots[r][u] = <query r of the block, reference u of the panel>.
inline void micro(const float* qb, const float* panel, int64_t d, float (*dots)[NR]) {
  __m512 c[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm512_setzero_ps();
  for (int64_t j = 0; j < d; ++j) {
    const __m512 b0 = _mm512_load_ps(panel + j * NR);
    const __m512 b1 = _mm512_load_ps(panel + j * NR + 16);
    const float* a = qb + j * MR;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      c[r][0] = _mm512_fmadd_ps(av, b0, c[r][0]);
      c[r][1] = _mm512_fmadd_ps(av, b1, c[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    _mm512_store_ps(dots[r], c[r][0]);
    _mm512_store_ps(dots[r] + 16, c[r][1]);
  }
}

// The `keep` best candidates of a query by float distance. Candidates that beat the
// current bound are appended; when the buffer holds 2 * keep, nth_element cuts it back
// to the best keep and tightens the bound (amortised O(1) per candidate, no heap).
struct Candidates {
  std::vector<std::pair<float, int64_t>> buf;
  float worst = std::numeric_limits<float>::infinity();
  int keep = 0;

  void reset(int k) {
    keep = k;
    buf.clear();
    buf.reserve(2 * static_cast<size_t>(k));
    worst = std::numeric_limits<float>::infinity();
  }
  void cut() {
    if (static_cast<int>(buf.size()) <= keep) return;
    std::nth_element(buf.begin(), buf.begin() + (keep - 1), buf.end());
    buf.resize(keep);
    worst = buf[keep - 1].first;
  }
  void offer(float dist, int64_t idx) {
    if (!(dist < worst)) return;
    buf.emplace_back(dist, idx);
    if (buf.size() >= 2 * static_cast<size_t>(keep)) cut();
  }
};

// Candidate lists (k + margin per query, unordered) for every query row; the caller
// re-ranks them exactly.
template <typename Emit>
void knn_candidates(const float* x, int64_t n, const float* q, int64_t m, int64_t d, int keep, bool self_query, Emit emit) {
  const int64_t np = (n + NR - 1) / NR;
  Floats packed(static_cast<size_t>(np * d * NR));
  pack_panels(x, n, d, packed.p);
  const std::vector<float> xn = sqnorms(x, n, d, np * NR, std::numeric_limits<float>::infinity());
  const std::vector<float> qn = sqnorms(q, m, d, m, 0.0f);
  const int64_t nchunks = (m + QCHUNK - 1) / QCHUNK;
#pragma omp parallel
  {
    Floats qpk(static_cast<size_t>(QCHUNK * d));
    std::vector<Candidates> cand(QCHUNK);
    alignas(64) float dots[MR][NR];
    alignas(64) float vals[NR];
    const __m512 two = _mm512_set1_ps(2.0f);
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t q0 = c * QCHUNK;
      const int64_t nq = std::min<int64_t>(QCHUNK, m - q0);
      const int64_t nb = (nq + MR - 1) / MR;
      pack_queries(q, q0, nq, d, qpk.p);
      for (int64_t i = 0; i < nq; ++i) cand[i].reset(keep);
      for (int64_t t0 = 0; t0 < np; t0 += TILE_PANELS) {
        const int64_t t1 = std::min(np, t0 + TILE_PANELS);
        for (int64_t b = 0; b < nb; ++b) {
          const int nr = static_cast<int>(std::min<int64_t>(MR, nq - b * MR));
          for (int64_t p = t0; p < t1; ++p) {
            micro(qpk.p + b * d * MR, packed.p + p * d * NR, d, dots);
            const __m512 xn0 = _mm512_loadu_ps(xn.data() + p * NR);
            const __m512 xn1 = _mm512_loadu_ps(xn.data() + p * NR + 16);
            for (int r = 0; r < nr; ++r) {
              const int64_t li = b * MR + r, qi = q0 + li;
              Candidates& cr = cand[li];
              // |x|^2 - 2<q, x> < worst - |q|^2
              const __m512 thr = _mm512_set1_ps(cr.worst - qn[qi]);
              const __m512 v0 = _mm512_fnmadd_ps(two, _mm512_load_ps(dots[r]), xn0);
              const __m512 v1 = _mm512_fnmadd_ps(two, _mm512_load_ps(dots[r] + 16), xn1);
              uint32_t mask = static_cast<uint32_t>(_mm512_cmp_ps_mask(v0, thr, _CMP_LT_OQ)) |
                              (static_cast<uint32_t>(_mm512_cmp_ps_mask(v1, thr, _CMP_LT_OQ)) << 16);
              if (!mask) continue;
              _mm512_store_ps(vals, v0);
              _mm512_store_ps(vals + 16, v1);
              while (mask) {
                const int u = __builtin_ctz(mask);
                mask &= mask - 1;
                const int64_t xi = p * NR + u;
                if (self_query && xi == qi) continue;
                cr.offer(vals[u] + qn[qi], xi);
              }
            }
          }
        }
      }
      for (int64_t i = 0; i < nq; ++i) {
        cand[i].cut();
        emit(q0 + i, cand[i].buf);
      }
    }
  }
}

// Sum of sum_s exp(-|a-b|^2 inv[s]) over pairs (a in A, b in B), in double. same: A == B,
// only pairs col > row are visited and doubled; the diagonal adds ns per point if
// include_diag.
inline double kernel_sum(const float* a, int64_t na, const float* b, int64_t nb, int64_t d, const RbfScales& scales, bool same, bool include_diag) {
  const int64_t np = (nb + NR - 1) / NR;
  Floats packed(static_cast<size_t>(np * d * NR));
  pack_panels(b, nb, d, packed.p);
  const std::vector<float> bn = sqnorms(b, nb, d, np * NR, std::numeric_limits<float>::infinity());
  const std::vector<float> an = same ? bn : sqnorms(a, na, d, na, 0.0f);
  const int ns = static_cast<int>(scales.inv.size());
  std::vector<__m512d> neg_inv(ns);
  for (int s = 0; s < ns; ++s) neg_inv[s] = _mm512_set1_pd(-scales.inv[s]);
  const bool ladder = scales.ladder;
  const int64_t nchunks = (na + QCHUNK - 1) / QCHUNK;
  const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());

  // sum of the kernel over 8 squared distances
  auto kern8 = [&](__m512d dist) {
    if (ladder) {
      __m512d e = exp_neg(_mm512_mul_pd(dist, neg_inv[0]));
      __m512d kv = e;
      for (int s = 1; s < ns; ++s) {
        e = _mm512_mul_pd(e, e);
        e = _mm512_mul_pd(e, e);
        kv = _mm512_add_pd(kv, e);
      }
      return kv;
    }
    __m512d kv = _mm512_setzero_pd();
    for (int s = 0; s < ns; ++s) kv = _mm512_add_pd(kv, exp_neg(_mm512_mul_pd(dist, neg_inv[s])));
    return kv;
  };

  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    Floats qpk(static_cast<size_t>(QCHUNK * d));
    alignas(64) float dots[MR][NR];
    const __m512 two = _mm512_set1_ps(2.0f);
    const __m512 zero = _mm512_setzero_ps();
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t q0 = c * QCHUNK;
      const int64_t nq = std::min<int64_t>(QCHUNK, na - q0);
      const int64_t nblk = (nq + MR - 1) / MR;
      pack_queries(a, q0, nq, d, qpk.p);
      __m512d acc = _mm512_setzero_pd();
      const int64_t p_first = same ? q0 / NR : 0;  // panels wholly left of the diagonal hold no col > row pair
      for (int64_t t0 = p_first; t0 < np; t0 += TILE_PANELS) {
        const int64_t t1 = std::min(np, t0 + TILE_PANELS);
        for (int64_t blk = 0; blk < nblk; ++blk) {
          const int nr = static_cast<int>(std::min<int64_t>(MR, nq - blk * MR));
          const int64_t row0 = q0 + blk * MR;
          for (int64_t p = t0; p < t1; ++p) {
            const int64_t col0 = p * NR;
            if (same && col0 + NR - 1 <= row0) continue;  // every col <= every row
            micro(qpk.p + blk * d * MR, packed.p + p * d * NR, d, dots);
            const __m512 bn0 = _mm512_loadu_ps(bn.data() + col0);
            const __m512 bn1 = _mm512_loadu_ps(bn.data() + col0 + 16);
            for (int r = 0; r < nr; ++r) {
              const int64_t ai = row0 + r;
              const __m512 anr = _mm512_set1_ps(an[ai]);
              __m512 d0 = _mm512_max_ps(zero, _mm512_add_ps(anr, _mm512_fnmadd_ps(two, _mm512_load_ps(dots[r]), bn0)));
              __m512 d1 = _mm512_max_ps(zero, _mm512_add_ps(anr, _mm512_fnmadd_ps(two, _mm512_load_ps(dots[r] + 16), bn1)));
              if (same && col0 <= ai) {
                // keep lanes with col > ai: lane u of half h is col0 + 16 h + u
                const int64_t cut = ai - col0;  // lanes <= cut (over the 32) are dropped
                const uint32_t keepm = cut >= 31 ? 0u : (0xFFFFFFFFu << (cut + 1));
                d0 = _mm512_mask_blend_ps(static_cast<__mmask16>(keepm & 0xFFFF), inf, d0);
                d1 = _mm512_mask_blend_ps(static_cast<__mmask16>(keepm >> 16), inf, d1);
              }
              const __m512d lo0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d0));
              const __m512d hi0 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d0), 1)));
              const __m512d lo1 = _mm512_cvtps_pd(_mm512_castps512_ps256(d1));
              const __m512d hi1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d1), 1)));
              acc = _mm512_add_pd(acc, _mm512_add_pd(_mm512_add_pd(kern8(lo0), kern8(hi0)), _mm512_add_pd(kern8(lo1), kern8(hi1))));
            }
          }
        }
      }
      total += _mm512_reduce_add_pd(acc);
    }
  }
  if (same) return 2.0 * total + (include_diag ? static_cast<double>(na) * ns : 0.0);
  return total;
}

// p[j] = exp(-dist[j] * beta) for j < k; returns (sum p, sum dist * p).
inline std::pair<double, double> exp_row(const double* dist, int k, double beta, double* p) {
  const __m512d nb = _mm512_set1_pd(-beta);
  __m512d sp = _mm512_setzero_pd(), sdp = _mm512_setzero_pd();
  for (int j = 0; j < k; j += 8) {
    const __mmask8 mk = k - j >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << (k - j)) - 1);
    const __m512d dv = _mm512_maskz_loadu_pd(mk, dist + j);
    const __m512d e = _mm512_maskz_mov_pd(mk, exp_neg(_mm512_mul_pd(dv, nb)));
    _mm512_mask_storeu_pd(p + j, mk, e);
    sp = _mm512_add_pd(sp, e);
    sdp = _mm512_fmadd_pd(dv, e, sdp);
  }
  return {_mm512_reduce_add_pd(sp), _mm512_reduce_add_pd(sdp)};
}

}  // namespace avx512
}  // namespace cellsynth

#endif  // __AVX512F__
