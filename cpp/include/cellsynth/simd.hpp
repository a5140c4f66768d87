// Explicit vector versions of the float32 kNN and MMD kernels and of LISI's inner exp,
// written once over a vector-traits type V (simd_avx2.hpp: 8 floats / 4 doubles per
// register; simd_avx512.hpp: 16 / 8) and compiled into each instruction-set build
// that has one (cpp/isa_avx2.cpp, cpp/isa_avx512.cpp).
//
// Distances: a GEMM-style micro-kernel. Reference rows are packed in panels of
// NR = 2 W (panel[j][u] = x[row u][feature j], 64-byte aligned), query rows in blocks
// of V::MR (block[j][r]); one call keeps the MR x NR dot products in 2 MR vector
// accumulators, loading two reference vectors and broadcasting MR query values per
// feature. Cache blocking: each thread takes QCHUNK queries and walks the references
// in tiles of TILE_PANELS panels (resident in L2), so the references stream from L3
// once per chunk rather than once per block.
//
// kNN: squared distance = |q|^2 + |x|^2 - 2<q, x>; the NR candidates of a panel are
// compared with the row's current k+8-th best in one vector compare and only the few
// that beat it reach a scalar buffer (cut back with nth_element when full); the kept
// candidates are re-ranked with exact double distances (kernels.hpp).
//
// MMD: the same tiles, then exp in float, W lanes at a time (Cephes' expf: Cody-Waite
// reduction, degree-5 polynomial, about 1 ulp), the power-of-two ladder by squaring,
// each row's kernel values converted to double and accumulated there. Denormals are
// flushed to zero meanwhile (far pairs at the narrow scales underflow; denormal
// arithmetic would cost ~100 cycles each). A self-sum visits only pairs with
// col > row and doubles them; the diagonal (distance exactly 0) is added analytically.
//
// Float32 products and kernel values, float64 sums: distances carry float32 rounding
// (relative 1e-7 of |q|^2 + |x|^2), and a float exp's rounding (relative 6e-8, grown
// 4x by each squaring of the ladder, as the kernel's sensitivity to a distance error
// grows 4x per scale) is of the same order; sums over pairs are double. LISI's exp
// (exp_row) stays in double: its perplexity search wants every digit.
#pragma once

namespace cellsynth {
namespace CELLSYNTH_ISA {
namespace simd {

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

// exp(x) in double for x <= 0, every lane (V::dexp_poly does the polynomial and the
// 2^n scaling; lanes below V::kExpMin give 0).
template <class V>
inline typename V::D exp_neg(typename V::D x) {
  const auto tiny = V::dlt(x, V::dset1(V::kExpMin));
  x = V::dmax(x, V::dset1(V::kExpMin));
  const typename V::D n = V::dround(V::dmul(x, V::dset1(1.4426950408889634074)));
  typename V::D r = V::dfnmadd(n, V::dset1(6.93147180369123816490e-01), x);
  r = V::dfnmadd(n, V::dset1(1.90821492927058770002e-10), r);
  // Taylor series to r^11 on |r| <= ln2 / 2 (truncation < 7e-15 relative)
  typename V::D p = V::dset1(1.0 / 39916800.0);
  p = V::dfmadd(p, r, V::dset1(1.0 / 3628800.0));
  p = V::dfmadd(p, r, V::dset1(1.0 / 362880.0));
  p = V::dfmadd(p, r, V::dset1(1.0 / 40320.0));
  p = V::dfmadd(p, r, V::dset1(1.0 / 5040.0));
  p = V::dfmadd(p, r, V::dset1(1.0 / 720.0));
  p = V::dfmadd(p, r, V::dset1(1.0 / 120.0));
  p = V::dfmadd(p, r, V::dset1(1.0 / 24.0));
  p = V::dfmadd(p, r, V::dset1(1.0 / 6.0));
  p = V::dfmadd(p, r, V::dset1(0.5));
  p = V::dfmadd(p, r, V::dset1(1.0));
  p = V::dfmadd(p, r, V::dset1(1.0));
  return V::dzero_where(V::dscale2n(p, n), tiny);
}

// exp(x) in float for x <= 0, every lane (Cephes' expf, about 1 ulp). Lanes below -87.3
// (exp < 1.2e-38) give a value at or below the smallest normal float, which the caller's
// flush-to-zero mode turns into 0 where it underflows.
template <class V>
inline typename V::F expf_neg(typename V::F x) {
  using F = typename V::F;
  x = V::max(x, V::set1(-87.3f));
  const F n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  F r = V::fnmadd(n, V::set1(0.693359375f), x);
  r = V::fnmadd(n, V::set1(-2.12194440e-4f), r);
  F p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  return V::scale2n(p, n);
}

// Flush-to-zero and denormals-are-zero for this thread while alive (MXCSR restored after).
struct FlushDenormals {
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

template <class V>
constexpr int NR = 2 * V::W;  // reference rows per panel (two vectors)
template <class V>
constexpr int64_t QCHUNK = 16 * V::MR;  // query rows per thread task
template <class V>
constexpr int64_t TILE_PANELS = 1024 / NR<V>;  // panels per cache tile (1,024 reference rows)

// Rows of x (n x d) in panels of NR: out[(p * d + j) * NR + u] = x[p * NR + u][j], zero past n.
template <class V>
inline void pack_panels(const float* x, int64_t n, int64_t d, float* out) {
  constexpr int nr = NR<V>;
  const int64_t np = (n + nr - 1) / nr;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < np; ++p) {
    float* o = out + p * d * nr;
    for (int u = 0; u < nr; ++u) {
      const int64_t i = p * nr + u;
      for (int64_t j = 0; j < d; ++j) o[j * nr + u] = i < n ? x[i * d + j] : 0.0f;
    }
  }
}

// Query rows [q0, q0 + nq) in blocks of MR: out[(b * d + j) * MR + r], zero rows past nq.
template <class V>
inline void pack_queries(const float* q, int64_t q0, int64_t nq, int64_t d, float* out) {
  const int64_t nb = (nq + V::MR - 1) / V::MR;
  for (int64_t b = 0; b < nb; ++b)
    for (int r = 0; r < V::MR; ++r) {
      const int64_t i = b * V::MR + r;
      for (int64_t j = 0; j < d; ++j) out[(b * d + j) * V::MR + r] = i < nq ? q[(q0 + i) * d + j] : 0.0f;
    }
}

}  // namespace simd

// defined in kernels.hpp (included after this file): squared row norms, summed in double
template <typename T>
inline std::vector<T> row_sqnorms(const T* x, int64_t n, int64_t d);

namespace simd {

// Squared norms, padded to whole panels with `pad`.
inline std::vector<float> sqnorms(const float* x, int64_t n, int64_t d, int64_t padded, float pad) {
  std::vector<float> out = row_sqnorms(x, n, d);
  out.resize(static_cast<size_t>(padded), pad);
  return out;
}

// dots[r][u] = <query r of the block, reference u of the panel>.
template <class V>
inline void micro(const float* qb, const float* panel, int64_t d, float (*dots)[NR<V>]) {
  typename V::F c[V::MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < V::MR; ++r) c[r][0] = c[r][1] = V::zero();
  for (int64_t j = 0; j < d; ++j) {
    const typename V::F b0 = V::load(panel + j * NR<V>);
    const typename V::F b1 = V::load(panel + j * NR<V> + V::W);
    const float* a = qb + j * V::MR;
#pragma GCC unroll 8
    for (int r = 0; r < V::MR; ++r) {
      const typename V::F av = V::set1(a[r]);
      c[r][0] = V::fmadd(av, b0, c[r][0]);
      c[r][1] = V::fmadd(av, b1, c[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < V::MR; ++r) {
    V::store(dots[r], c[r][0]);
    V::store(dots[r] + V::W, c[r][1]);
  }
}

// The `keep` best candidates of a query by float distance. Candidates that beat the
// current bound are appended; when the buffer holds 2 * keep, nth_element cuts it back
// to the best keep and tightens the bound (amortised O(1) per candidate, no heap). A
// candidate is one 64-bit key, the distance's float bits above the index: for
// distances >= 0 (negative rounding clamped to 0) integer order is (distance, index)
// order, so a cut is one integer compare per step and ties keep the lower index.
struct Candidates {
  std::vector<uint64_t> buf;
  float worst = std::numeric_limits<float>::infinity();
  int keep = 0;

  static uint64_t key(float dist, int64_t idx) {
    const float d = dist > 0.0f ? dist : 0.0f;  // also turns -0.0 into +0.0
    uint32_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    return (static_cast<uint64_t>(bits) << 32) | static_cast<uint32_t>(idx);
  }
  static float dist_of(uint64_t k) {
    const uint32_t bits = static_cast<uint32_t>(k >> 32);
    float d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  }
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
    worst = dist_of(buf[keep - 1]);
  }
  void offer(float dist, int64_t idx) {
    if (!(dist < worst)) return;
    buf.push_back(key(dist, idx));
    if (buf.size() >= 2 * static_cast<size_t>(keep)) cut();
  }
};

// Candidate lists (k + margin per query, unordered) for every query row; the caller
// re-ranks them exactly.
template <class V, typename Emit>
void knn_candidates(const float* x, int64_t n, const float* q, int64_t m, int64_t d, int keep, bool self_query, Emit emit) {
  constexpr int nr = NR<V>;
  constexpr int64_t qchunk = QCHUNK<V>, tile = TILE_PANELS<V>;
  const int64_t np = (n + nr - 1) / nr;
  Floats packed(static_cast<size_t>(np * d * nr));
  pack_panels<V>(x, n, d, packed.p);
  const std::vector<float> xn = sqnorms(x, n, d, np * nr, std::numeric_limits<float>::infinity());
  const std::vector<float> qn = sqnorms(q, m, d, m, 0.0f);
  const int64_t nchunks = (m + qchunk - 1) / qchunk;
#pragma omp parallel
  {
    Floats qpk(static_cast<size_t>(qchunk * d));
    std::vector<Candidates> cand(qchunk);
    alignas(64) float dots[V::MR][nr];
    alignas(64) float vals[nr];
    const typename V::F two = V::set1(2.0f);
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t q0 = c * qchunk;
      const int64_t nq = std::min<int64_t>(qchunk, m - q0);
      const int64_t nb = (nq + V::MR - 1) / V::MR;
      pack_queries<V>(q, q0, nq, d, qpk.p);
      for (int64_t i = 0; i < nq; ++i) cand[i].reset(keep);
      for (int64_t t0 = 0; t0 < np; t0 += tile) {
        const int64_t t1 = std::min(np, t0 + tile);
        for (int64_t b = 0; b < nb; ++b) {
          const int nrows = static_cast<int>(std::min<int64_t>(V::MR, nq - b * V::MR));
          for (int64_t p = t0; p < t1; ++p) {
            micro<V>(qpk.p + b * d * V::MR, packed.p + p * d * nr, d, dots);
            const typename V::F xn0 = V::loadu(xn.data() + p * nr);
            const typename V::F xn1 = V::loadu(xn.data() + p * nr + V::W);
            for (int r = 0; r < nrows; ++r) {
              const int64_t li = b * V::MR + r, qi = q0 + li;
              Candidates& cr = cand[li];
              // |x|^2 - 2<q, x> < worst - |q|^2
              const typename V::F thr = V::set1(cr.worst - qn[qi]);
              const typename V::F v0 = V::fnmadd(two, V::load(dots[r]), xn0);
              const typename V::F v1 = V::fnmadd(two, V::load(dots[r] + V::W), xn1);
              uint32_t mask = V::lt_mask(v0, thr) | (V::lt_mask(v1, thr) << V::W);
              if (!mask) continue;
              V::store(vals, v0);
              V::store(vals + V::W, v1);
              while (mask) {
                const int u = __builtin_ctz(mask);
                mask &= mask - 1;
                const int64_t xi = p * nr + u;
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
template <class V>
double kernel_sum(const float* a, int64_t na, const float* b, int64_t nb, int64_t d, const RbfScales& scales, bool same, bool include_diag) {
  using F = typename V::F;
  using D = typename V::D;
  constexpr int nr = NR<V>;
  constexpr int64_t qchunk = QCHUNK<V>, tile = TILE_PANELS<V>;
  const int64_t np = (nb + nr - 1) / nr;
  Floats packed(static_cast<size_t>(np * d * nr));
  pack_panels<V>(b, nb, d, packed.p);
  const std::vector<float> bn = sqnorms(b, nb, d, np * nr, std::numeric_limits<float>::infinity());
  const std::vector<float> an = same ? bn : sqnorms(a, na, d, na, 0.0f);
  const int ns = static_cast<int>(scales.inv.size());
  const bool ladder = scales.ladder;
  const int64_t nchunks = (na + qchunk - 1) / qchunk;

  // the kernel over W squared distances, in float
  std::vector<float> ninv(ns);
  for (int s = 0; s < ns; ++s) ninv[s] = static_cast<float>(-scales.inv[s]);
  auto kern = [&](F dist) {
    if (ladder) {
      F e = expf_neg<V>(V::mul(dist, V::set1(ninv[0])));
      F kv = e;
      for (int s = 1; s < ns; ++s) {
        e = V::mul(e, e);
        e = V::mul(e, e);
        kv = V::add(kv, e);
      }
      return kv;
    }
    F kv = V::zero();
    for (int s = 0; s < ns; ++s) kv = V::add(kv, expf_neg<V>(V::mul(dist, V::set1(ninv[s]))));
    return kv;
  };

  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    FlushDenormals ftz;
    Floats qpk(static_cast<size_t>(qchunk * d));
    alignas(64) float dots[V::MR][nr];
    const F two = V::set1(2.0f);
    const F zero = V::zero();
    const F inf = V::set1(std::numeric_limits<float>::infinity());
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t q0 = c * qchunk;
      const int64_t nq = std::min<int64_t>(qchunk, na - q0);
      const int64_t nblk = (nq + V::MR - 1) / V::MR;
      pack_queries<V>(a, q0, nq, d, qpk.p);
      D acc = V::dset1(0.0);
      const int64_t p_first = same ? q0 / nr : 0;  // panels wholly left of the diagonal hold no col > row pair
      for (int64_t t0 = p_first; t0 < np; t0 += tile) {
        const int64_t t1 = std::min(np, t0 + tile);
        for (int64_t blk = 0; blk < nblk; ++blk) {
          const int nrows = static_cast<int>(std::min<int64_t>(V::MR, nq - blk * V::MR));
          const int64_t row0 = q0 + blk * V::MR;
          for (int64_t p = t0; p < t1; ++p) {
            const int64_t col0 = p * nr;
            if (same && col0 + nr - 1 <= row0) continue;  // every col <= every row
            micro<V>(qpk.p + blk * d * V::MR, packed.p + p * d * nr, d, dots);
            const F bn0 = V::loadu(bn.data() + col0);
            const F bn1 = V::loadu(bn.data() + col0 + V::W);
            for (int r = 0; r < nrows; ++r) {
              const int64_t ai = row0 + r;
              const F anr = V::set1(an[ai]);
              F d0 = V::max(zero, V::add(anr, V::fnmadd(two, V::load(dots[r]), bn0)));
              F d1 = V::max(zero, V::add(anr, V::fnmadd(two, V::load(dots[r] + V::W), bn1)));
              if (same && col0 <= ai) {
                // keep lanes with col > ai: lane u of half h is col0 + W h + u
                const int64_t cut = ai - col0;  // lanes <= cut (over the NR) are dropped
                const uint32_t keepm = cut >= nr - 1 ? 0u : (0xFFFFFFFFu << (cut + 1));
                const uint32_t half = (1u << V::W) - 1;
                d0 = V::keep_lanes(d0, keepm & half, inf);
                d1 = V::keep_lanes(d1, (keepm >> V::W) & half, inf);
              }
              const F kv = V::add(kern(d0), kern(d1));
              acc = V::dadd(acc, V::dadd(V::lo(kv), V::hi(kv)));
            }
          }
        }
      }
      total += V::dsum(acc);
    }
  }
  if (same) return 2.0 * total + (include_diag ? static_cast<double>(na) * ns : 0.0);
  return total;
}

// p[j] = exp(-dist[j] * beta) for j < k; returns (sum p, sum dist * p).
template <class V>
inline std::pair<double, double> exp_row(const double* dist, int k, double beta, double* p) {
  const typename V::D nbeta = V::dset1(-beta);
  typename V::D sp = V::dset1(0.0), sdp = V::dset1(0.0);
  int j = 0;
  for (; j + V::DW <= k; j += V::DW) {
    const typename V::D dv = V::dloadu(dist + j);
    const typename V::D e = exp_neg<V>(V::dmul(dv, nbeta));
    V::dstoreu(p + j, e);
    sp = V::dadd(sp, e);
    sdp = V::dfmadd(dv, e, sdp);
  }
  double s1 = V::dsum(sp), s2 = V::dsum(sdp);
  for (; j < k; ++j) {  // the tail, in scalar code
    p[j] = std::exp(-dist[j] * beta);
    s1 += p[j];
    s2 += dist[j] * p[j];
  }
  return {s1, s2};
}

}  // namespace simd
}  // namespace CELLSYNTH_ISA
}  // namespace cellsynth
