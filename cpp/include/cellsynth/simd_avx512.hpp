// Vector traits for simd.hpp on AVX-512 (F, DQ, BW, VL): 16 floats or 8 doubles per
// register; micro-kernel of 8 query rows x 32 reference rows in 16 accumulators.
#pragma once

namespace cellsynth {
namespace CELLSYNTH_ISA {

struct Avx512 {
  static constexpr int W = 16, DW = 8, MR = 8;
  static constexpr double kExpMin = -708.0;  // exp below this is taken as 0
  using F = __m512;
  using D = __m512d;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_load_ps(p); }
  static F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_store_ps(p, v); }
  static F set1(float a) { return _mm512_set1_ps(a); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F scale2n(F p, F n) { return _mm512_scalef_ps(p, n); }  // p * 2^n
  static uint32_t lt_mask(F a, F b) { return static_cast<uint32_t>(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)); }
  // lanes whose bit is 0 become `other`
  static F keep_lanes(F v, uint32_t bits, F other) { return _mm512_mask_blend_ps(static_cast<__mmask16>(bits), other, v); }
  static D lo(F v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static D hi(F v) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }

  static D dset1(double a) { return _mm512_set1_pd(a); }
  static D dloadu(const double* p) { return _mm512_loadu_pd(p); }
  static void dstoreu(double* p, D v) { _mm512_storeu_pd(p, v); }
  static D dadd(D a, D b) { return _mm512_add_pd(a, b); }
  static D dmul(D a, D b) { return _mm512_mul_pd(a, b); }
  static D dmax(D a, D b) { return _mm512_max_pd(a, b); }
  static D dfmadd(D a, D b, D c) { return _mm512_fmadd_pd(a, b, c); }
  static D dfnmadd(D a, D b, D c) { return _mm512_fnmadd_pd(a, b, c); }
  static D dround(D a) { return _mm512_roundscale_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static D dscale2n(D p, D n) { return _mm512_scalef_pd(p, n); }  // p * 2^n
  static __mmask8 dlt(D a, D b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
  static D dzero_where(D v, __mmask8 m) { return _mm512_maskz_mov_pd(static_cast<__mmask8>(~m), v); }
  static double dsum(D v) { return _mm512_reduce_add_pd(v); }
};

}  // namespace CELLSYNTH_ISA
}  // namespace cellsynth
