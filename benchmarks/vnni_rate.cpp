// How many vpdpbusd (AVX-512 VNNI, zmm) and vfmadd (zmm) one core retires per second with N independent
// accumulators, N = 4 .. 28. Built and run by benchmarks/vnni_rate.py; the figures go to
// benchmarks/results/vnni_rate.md. Why it exists: the int8 GEMM micro-kernel's shape (kRows in
// src/vggnet/cpu/csrc/winograd_int8.cpp) depends on where this rate falls off.
#include <immintrin.h>

#include <chrono>
#include <cstdio>

template <int N, class Op, class V>
double rate(Op op, V start, V a, V b) {
  V acc[N];
  for (int i = 0; i < N; ++i) acc[i] = start;
  const long iters = 20000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < N; ++i) acc[i] = op(acc[i], a, b);
    __asm__ volatile("" : "+v"(a), "+v"(b));  // a and b are unknown each round: nothing is hoisted
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile char sink = 0;
  for (int i = 0; i < N; ++i) sink ^= reinterpret_cast<const char*>(&acc[i])[0];
  return iters * N / s / 1e9;
}

template <int N>
void row() {
  auto dp = [](__m512i c, __m512i a, __m512i b) { return _mm512_dpbusd_epi32(c, a, b); };
  auto fma = [](__m512 c, __m512 a, __m512 b) { return _mm512_fmadd_ps(a, b, c); };
  const double d = rate<N>(dp, _mm512_set1_epi32(1), _mm512_set1_epi32(0x01010101), _mm512_set1_epi32(0x01020304));
  const double f = rate<N>(fma, _mm512_set1_ps(1.f), _mm512_set1_ps(1.f), _mm512_set1_ps(1e-9f));
  std::printf("%d %.3f %.3f\n", N, d, f);
}

int main() {
  row<4>(); row<8>(); row<12>(); row<16>(); row<20>(); row<24>(); row<28>();
}
