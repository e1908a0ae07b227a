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
inline vec fmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline vec fnmadd(vec a, vec b, vec c) { return _mm256_fnmadd_ps(a, b, c); }

#else
#error "the kernels need AVX-512 (-mavx512f ...) or AVX2 and FMA (-mavx2 -mfma)"
#endif

constexpr int kPanel = kLanes * kVectors;  // output channels per packed weight panel
constexpr int kRows = 6;                   // rows (tiles, pixels) per GEMM micro-kernel call

}  // namespace vggnet::simd
