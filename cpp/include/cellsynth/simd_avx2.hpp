// Vector traits for simd.hpp on AVX2 + FMA: 8 floats or 4 doubles per register;
// micro-kernel of 6 query rows x 16 reference rows in 12 of the 16 ymm registers.
#pragma once

namespace cellsynth {
namespace CELLSYNTH_ISA {

struct Avx2 {
  static constexpr int W = 8, DW = 4, MR = 6;
  static constexpr double kExpMin = -708.0;  // exp below this is taken as 0 (2^n needs n >= -1022)
  using F = __m256;
  using D = __m256d;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_load_ps(p); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_store_ps(p, v); }
  static F set1(float a) { return _mm256_set1_ps(a); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // p * 2^n for integer-valued n in [-126, 127]: n + 127 in the exponent bits
  static F scale2n(F p, F n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  static uint32_t lt_mask(F a, F b) { return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ))); }
  // lanes whose bit is 0 become `other`
  static F keep_lanes(F v, uint32_t bits, F other) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i on = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane), lane);
    return _mm256_blendv_ps(other, v, _mm256_castsi256_ps(on));
  }
  static D lo(F v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
  static D hi(F v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

  static D dset1(double a) { return _mm256_set1_pd(a); }
  static D dloadu(const double* p) { return _mm256_loadu_pd(p); }
  static void dstoreu(double* p, D v) { _mm256_storeu_pd(p, v); }
  static D dadd(D a, D b) { return _mm256_add_pd(a, b); }
  static D dmul(D a, D b) { return _mm256_mul_pd(a, b); }
  static D dmax(D a, D b) { return _mm256_max_pd(a, b); }
  static D dfmadd(D a, D b, D c) { return _mm256_fmadd_pd(a, b, c); }
  static D dfnmadd(D a, D b, D c) { return _mm256_fnmadd_pd(a, b, c); }
  static D dround(D a) { return _mm256_round_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // p * 2^n for integer-valued n in [-1022, 1023]: n + 1023 in the exponent bits
  static D dscale2n(D p, D n) {
    const __m256d t = _mm256_add_pd(n, _mm256_set1_pd(4503599627370496.0 + 1023.0));  // 2^52 + 1023 + n
    return _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52)));
  }
  static D dlt(D a, D b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
  static D dzero_where(D v, D m) { return _mm256_andnot_pd(m, v); }
  static double dsum(D v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};

}  // namespace CELLSYNTH_ISA
}  // namespace cellsynth
