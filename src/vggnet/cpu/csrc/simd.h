// The vector the fp32 kernels are written in. vggnet.cpu.compiled builds the same sources twice, once with
// AVX-512 flags (a vector of 16 floats, 32 registers) and once with AVX2 + FMA (8 floats, 16 registers), and
// loads the build the CPU can run; this header gives both the same names. The register blocking follows the
// register count: a GEMM micro-kernel keeps kRows x kVectors accumulators, kVectors loaded weights and one
// broadcast live (AVX-512: 6 x 4 + 4 + 1 = 29 of 32; AVX2: 6 x 2 + 2 + 1 = 15 of 16), so the panel of output
// channels a weight row packs is 64 floats wide for AVX-512 and 16 for AVX2.
#pragma once

#include <immintrin.h>

namespace vggnet::simd {

#if defined(__AVX512F__)

constexpr int kLanes = 16;
constexpr int kVectors = 4;
constexpr const char* kIsa = "avx512";
using vec = __m512;

inline vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
inline vec set1(float v) { return _mm512_set1_ps(v); }
inline vec zero() { return _mm512_setzero_ps(); }
inline vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
inline vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
inline vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
inline vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
inline vec min(vec a, vec b) { return _mm512_min_ps(a, b); }
inline vec round(vec v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vec fmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }     // a b + c
inline vec fnmadd(vec a, vec b, vec c) { return _mm512_fnmadd_ps(a, b, c); }   // c - a b

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int kLanes = 8;
constexpr int kVectors = 2;
constexpr const char* kIsa = "avx2";
using vec = __m256;

inline vec load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
inline vec set1(float v) { return _mm256_set1_ps(v); }
inline vec zero() { return _mm256_setzero_ps(); }
inline vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
inline vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
inline vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
inline vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
inline vec min(vec a, vec b) { return _mm256_min_ps(a, b); }
inline vec round(vec v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }  // to even
inline vec fmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline vec fnmadd(vec a, vec b, vec c) { return _mm256_fnmadd_ps(a, b, c); }

#else
#error "the kernels need AVX-512 (-mavx512f ...) or AVX2 and FMA (-mavx2 -mfma)"
#endif

constexpr int kPanel = kLanes * kVectors;  // output channels per packed weight panel
constexpr int kRows = 6;                   // rows (tiles, pixels) per GEMM micro-kernel call

}  // namespace vggnet::simd

// The int8 kernels' vector: kLanes int32 lanes, each summing 4 u8 x s8 products (vpdpbusd): AVX-512 VNNI in the
// avx512 build, AVX-VNNI (the same instruction on 256-bit vectors) in the avx2 build. The avx2 build compiles
// the int8 code, and only it, for AVX-VNNI (between VGGNET_INT8_BEGIN and VGGNET_INT8_END), and runs it only
// where the CPU has it (cpu_has_vnni).
#if defined(__AVX512F__)
#define VGGNET_INT8_BEGIN
#define VGGNET_INT8_END
#else
#define VGGNET_INT8_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avxvnni\")")
#define VGGNET_INT8_END _Pragma("GCC pop_options")
#endif

VGGNET_INT8_BEGIN
namespace vggnet::simd {

#if defined(__AVX512F__)

using ivec = __m512i;
inline ivec dpbusd(ivec acc, ivec a, ivec b) { return _mm512_dpbusd_epi32(acc, a, b); }
inline ivec iload(const void* p) { return _mm512_loadu_si512(p); }
inline void istore(void* p, ivec v) { _mm512_storeu_si512(p, v); }
inline ivec iset1(int v) { return _mm512_set1_epi32(v); }
inline ivec ineg(ivec v) { return _mm512_sub_epi32(_mm512_setzero_si512(), v); }
inline vec to_float(ivec v) { return _mm512_cvtepi32_ps(v); }
// kLanes floats rounded to the nearest (even) integer, saturated to 0 .. 255, stored as kLanes bytes.
inline void store_u8(unsigned char* p, vec v) {
  const __m512i q = _mm512_max_epi32(_mm512_cvtps_epi32(v), _mm512_setzero_si512());
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtusepi32_epi8(q));
}

#else

using ivec = __m256i;
inline ivec dpbusd(ivec acc, ivec a, ivec b) { return _mm256_dpbusd_avx_epi32(acc, a, b); }
inline ivec iload(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline void istore(void* p, ivec v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }
inline ivec iset1(int v) { return _mm256_set1_epi32(v); }
inline ivec ineg(ivec v) { return _mm256_sub_epi32(_mm256_setzero_si256(), v); }
inline vec to_float(ivec v) { return _mm256_cvtepi32_ps(v); }
inline void store_u8(unsigned char* p, vec v) {
  const __m256i q = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), _mm256_setzero_si256()),
                                     _mm256_set1_epi32(255));
  const __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(q, q), _mm256_setzero_si256());  // in each 128-bit half
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p),
                   _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
}

#endif

}  // namespace vggnet::simd
VGGNET_INT8_END
