// Winograd F(2x2, 3x3) with int8 GEMMs for VGG's 3x3 convolutions, fp32 in and out: AVX-512 VNNI in the avx512
// build, AVX-VNNI (the same vpdpbusd on 256-bit vectors, Intel's client cores since the 12th generation) in the
// avx2 build. Either runs only where the CPU has it (cpu_has_vnni); vggnet.cpu.int8_conv asks first.
//
// Quantised in the Winograd domain (vggnet/cpu/int8_conv.py calibrates): each transformed input tile V = B^T d B
// (fp32) becomes u8, round(V[p][c] / s[p][c]) + z[p], with a scale per tile position p and input channel c
// and a zero point per position; the transformed weights U = G g G^T, each input channel's row multiplied
// by s[p][c], are int8 with one scale per (p, output channel). Per position, M[p] = V[p] U[p] is an
// integer GEMM (vpdpbusd: 4 u8 x s8 products summed into int32) started from -z[p] sum_c U, so the zero
// point cancels; dequantised by its scale as it is stored, then Y = A^T M A + bias in fp32. F(2x2)'s
// transforms only add and subtract (F(4x4)'s scale by up to 8 and amplify the rounding beyond what int8
// keeps). The chunking is that of winograd_f32.cpp. An output tile is 2x2, exactly the window of VGG's
// max pool, so with `pool` (even H and W) the tile is pooled as it is made: a quarter of the writes and
// no pass of its own.

#include <immintrin.h>

#include <algorithm>

#include "kernels.h"
#include "simd.h"

VGGNET_INT8_BEGIN
namespace {

using namespace vggnet::simd;

// kIntRows tiles x kVectors vectors of output channels. AVX-512: 4 x 4 = 16 int32 accumulators; on Zen 4,
// vpdpbusd on zmm registers keeps its full rate only while at most 16 are live (benchmarks/vnni_rate.cpp
// measures it), and 24 (6 rows) ran the GEMMs at about half speed. AVX2: 6 x 2 = 12, with 2 weight vectors and
// a broadcast in the 16 registers.
constexpr int kIntRows = kLanes == 16 ? 4 : 6;
constexpr int kTile = 4, kOut = 2, kPositions = 16;

struct Layer {
  const float* x;        // (N, H, W, C)
  const int8_t* u;       // (16, Kp/P, C/4, P, 4) packed, P = kPanel (simd.h)
  const int32_t* comp;   // (16, Kp): z[p] sum_c U[p][c][k]
  const float* scale;    // (16, Kp): the scale of M[p][.][k]
  const float* inv_s;    // (16, C): 1 / s[p][c]
  const float* zp;       // (16): z[p], a whole number in 0 .. 255
  const float* bias;     // (K)
  float* y;              // (N, H, W, K), or (N, H/2, W/2, K) with pool
  int64_t n, h, w, c, k, kp, th, tw;
  bool relu, pool;
};

// B^T d of F(2, 3) (points 0, 1, -1).
inline void input_1d(const vec d[4], vec t[4]) {
  t[0] = sub(d[0], d[2]);
  t[1] = add(d[1], d[2]);
  t[2] = sub(d[2], d[1]);
  t[3] = sub(d[1], d[3]);
}

// V[p][t][c] as u8: round(v / s[p][c] + z[p]), saturated to 0..255.
void input_transform(const Layer& L, int64_t tile, int64_t t, uint8_t* V, int64_t vs) {
  const int64_t img = tile / (L.th * L.tw), rest = tile % (L.th * L.tw);
  const int64_t y0 = (rest / L.tw) * kOut - 1, x0 = (rest % L.tw) * kOut - 1;
  const bool inside = y0 >= 0 && x0 >= 0 && y0 + kTile <= L.h && x0 + kTile <= L.w;
  const float* base = L.x + img * L.h * L.w * L.c;
  for (int64_t cv = 0; cv < L.c; cv += kLanes) {
    vec bd[4][4];  // bd[i][j] = (B^T d)[i][j]
    for (int j = 0; j < kTile; ++j) {
      vec d[4], col[4];
      const int64_t xx = x0 + j;
      for (int i = 0; i < kTile; ++i) {
        const int64_t yy = y0 + i;
        if (inside || (yy >= 0 && yy < L.h && xx >= 0 && xx < L.w))
          d[i] = load(base + (yy * L.w + xx) * L.c + cv);
        else
          d[i] = zero();
      }
      input_1d(d, col);
      for (int i = 0; i < kTile; ++i) bd[i][j] = col[i];
    }
    for (int i = 0; i < kTile; ++i) {
      vec v[4];
      input_1d(bd[i], v);
      for (int j = 0; j < kTile; ++j) {
        const int p = i * kTile + j;
        store_u8(V + p * vs + t * L.c + cv, fmadd(v[j], load(L.inv_s + p * L.c + cv), set1(L.zp[p])));
      }
    }
  }
}

// Y = A^T M A + bias (+ ReLU) (max-pooled 2x2 with L.pool), M already dequantised to fp32.
void output_transform(const Layer& L, int64_t tile, int64_t t, const float* M, int64_t ms, int64_t k0, int64_t k1) {
  const int64_t img = tile / (L.th * L.tw), rest = tile % (L.th * L.tw);
  const int64_t y0 = (rest / L.tw) * kOut, x0 = (rest % L.tw) * kOut;
  const int64_t rows = std::min<int64_t>(kOut, L.h - y0), cols = std::min<int64_t>(kOut, L.w - x0);
  float* base = L.y + img * L.h * L.w * L.k;
  const vec z = zero();
  for (int64_t kv = k0; kv < k1; kv += kLanes) {
    vec m[4][4];
    for (int p = 0; p < kPositions; ++p) m[p / 4][p % 4] = load(M + p * ms + t * L.kp + kv);
    vec s[2][4];  // A^T m: o0 = m0 + m1 + m2, o1 = m1 - m2 - m3 (points 0, 1, -1, infinity)
    for (int j = 0; j < kTile; ++j) {
      s[0][j] = add(add(m[0][j], m[1][j]), m[2][j]);
      s[1][j] = sub(sub(m[1][j], m[2][j]), m[3][j]);
    }
    const vec b = load(L.bias + kv);
    if (L.pool) {  // max over the 2x2 tile, then bias and ReLU (both monotone, so the order does not matter)
      const vec top = max(add(add(s[0][0], s[0][1]), s[0][2]), sub(sub(s[0][1], s[0][2]), s[0][3]));
      const vec bottom = max(add(add(s[1][0], s[1][1]), s[1][2]), sub(sub(s[1][1], s[1][2]), s[1][3]));
      vec v = add(max(top, bottom), b);
      if (L.relu) v = max(v, z);
      store(L.y + ((img * L.th + y0 / 2) * L.tw + x0 / 2) * L.k + kv, v);
      continue;
    }
    for (int i = 0; i < rows; ++i) {
      vec o[2] = {add(add(s[i][0], s[i][1]), s[i][2]), sub(sub(s[i][1], s[i][2]), s[i][3])};
      for (int j = 0; j < cols; ++j) {
        vec v = add(o[j], b);
        if (L.relu) v = max(v, z);
        store(base + ((y0 + i) * L.w + x0 + j) * L.k + kv, v);
      }
    }
  }
}

// Cm[R x kPanel] = (A[R x C] (u8) . B[C x kPanel] (s8) - comp) * scale, as fp32; B packed (C/4, kPanel, 4).
template <int R>
inline void micro(const uint8_t* A, int64_t lda, const int8_t* B, int64_t C, const int32_t* comp, const float* scale,
                  float* Cm, int64_t ldc) {
  ivec acc[R][kVectors];
  for (int j = 0; j < kVectors; ++j) {
    const ivec start = ineg(iload(comp + kLanes * j));
    for (int r = 0; r < R; ++r) acc[r][j] = start;
  }
#pragma GCC unroll 2
  for (int64_t c = 0; c < C; c += 4) {
    const int8_t* b = B + c * kPanel;
    ivec bv[kVectors];
    for (int j = 0; j < kVectors; ++j) bv[j] = iload(b + 4 * kLanes * j);
    for (int r = 0; r < R; ++r) {
      int32_t four;  // channels c .. c+3 of row r, broadcast to every lane
      __builtin_memcpy(&four, A + r * lda + c, 4);
      const ivec a = iset1(four);
      for (int j = 0; j < kVectors; ++j) acc[r][j] = dpbusd(acc[r][j], a, bv[j]);
    }
  }
  for (int j = 0; j < kVectors; ++j) {
    const vec s = load(scale + kLanes * j);
    for (int r = 0; r < R; ++r) store(Cm + r * ldc + kLanes * j, mul(to_float(acc[r][j]), s));
  }
}

void gemm(const Layer& L, int64_t p, int64_t kb, int64_t tc, const uint8_t* V, int64_t vs, float* M, int64_t ms) {
  const uint8_t* A = V + p * vs;
  const int8_t* B = L.u + (p * (L.kp / kPanel) + kb) * L.c * kPanel;
  const int32_t* comp = L.comp + p * L.kp + kb * kPanel;
  const float* scale = L.scale + p * L.kp + kb * kPanel;
  float* Cm = M + p * ms + kb * kPanel;
  int64_t t = 0;
  for (; t + kIntRows <= tc; t += kIntRows) micro<kIntRows>(A + t * L.c, L.c, B, L.c, comp, scale, Cm + t * L.kp, L.kp);
  switch (tc - t) {
    case 5: micro<5>(A + t * L.c, L.c, B, L.c, comp, scale, Cm + t * L.kp, L.kp); break;
    case 4: micro<4>(A + t * L.c, L.c, B, L.c, comp, scale, Cm + t * L.kp, L.kp); break;
    case 3: micro<3>(A + t * L.c, L.c, B, L.c, comp, scale, Cm + t * L.kp, L.kp); break;
    case 2: micro<2>(A + t * L.c, L.c, B, L.c, comp, scale, Cm + t * L.kp, L.kp); break;
    case 1: micro<1>(A + t * L.c, L.c, B, L.c, comp, scale, Cm + t * L.kp, L.kp); break;
    default: break;
  }
}

void run_item(const Layer& L, int64_t t0, int64_t tc, int64_t kb0, int64_t kb1, uint8_t* V, float* M) {
  const int64_t vs = tc * L.c, ms = tc * L.kp;
  for (int64_t t = 0; t < tc; ++t) input_transform(L, t0 + t, t, V, vs);
  for (int64_t p = 0; p < kPositions; ++p)
    for (int64_t kb = kb0; kb < kb1; ++kb) gemm(L, p, kb, tc, V, vs, M, ms);
  for (int64_t t = 0; t < tc; ++t) output_transform(L, t0 + t, t, M, ms, kb0 * kPanel, std::min(L.k, kb1 * kPanel));
}

}  // namespace
VGGNET_INT8_END

at::Tensor vggnet::conv3x3_f2_int8(const at::Tensor& x, const at::Tensor& u, const at::Tensor& comp,
                                   const at::Tensor& scale, const at::Tensor& inv_s, const at::Tensor& zero_point,
                                   const at::Tensor& bias, bool relu, bool pool, int64_t k, int64_t chunk,
                                   int64_t groups) {
  TORCH_CHECK(vggnet::cpu_has_vnni(), "conv3x3_f2_int8 needs VNNI, which this CPU lacks (", vggnet::simd::kIsa,
              " build)");
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "x must be a float (N, C, H, W) tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be channels-last");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(c % 16 == 0 && k % 16 == 0, "channels must be multiples of 16");
  TORCH_CHECK(u.scalar_type() == at::kChar && u.is_contiguous() && u.dim() == 5 && u.size(0) == kPositions &&
                  u.size(2) * 4 == c && u.size(3) == kPanel && u.size(4) == 4 && u.size(1) * kPanel >= k,
              "u must be int8 packed (16, K/", kPanel, ", C/4, ", kPanel, ", 4) for this build");
  const int64_t kp = u.size(1) * kPanel;
  TORCH_CHECK(comp.scalar_type() == at::kInt && comp.is_contiguous() && comp.numel() == kPositions * kp,
              "comp must be int32 (16, Kp)");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.numel() == kPositions * kp,
              "scale must be float (16, Kp)");
  TORCH_CHECK(inv_s.scalar_type() == at::kFloat && inv_s.is_contiguous() && inv_s.numel() == kPositions * c,
              "inv_s must be float (16, C)");
  TORCH_CHECK(zero_point.scalar_type() == at::kFloat && zero_point.is_contiguous() && zero_point.numel() == kPositions,
              "zero_point must hold 16 floats");
  TORCH_CHECK(bias.is_contiguous() && bias.numel() == k, "bias must hold K values");
  TORCH_CHECK(!pool || (h % 2 == 0 && w % 2 == 0), "pool needs an even height and width");
  auto y = vggnet::Buffers::channels_last(n, k, pool ? h / 2 : h, pool ? w / 2 : w, x.options());
  Layer L{x.data_ptr<float>(), u.data_ptr<int8_t>(), comp.data_ptr<int32_t>(), scale.data_ptr<float>(),
          inv_s.data_ptr<float>(), zero_point.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(),
          n, h, w, c, k, kp, (h + kOut - 1) / kOut, (w + kOut - 1) / kOut, relu, pool};
  const int64_t tiles = n * L.th * L.tw, panels = kp / kPanel;
  const auto s = vggnet::split(tiles, kPositions * (c + 4 * kp), kPositions * c * kp, panels, chunk, groups, kIntRows);
  const int64_t v_bytes = (kPositions * s.chunk * c + 63) / 64 * 64, per_slot = v_bytes + kPositions * s.chunk * kp * 4;
  const int64_t per_group = (panels + s.groups - 1) / s.groups;
  char* buf = static_cast<char*>(vggnet::scratch(per_slot * at::get_num_threads()));
  vggnet::for_each_item(s.chunks * s.groups, [&](int64_t i, int64_t slot) {
    const int64_t t0 = (i / s.groups) * s.chunk, kb0 = (i % s.groups) * per_group;
    if (kb0 >= panels) return;  // an empty group when the panels do not divide evenly
    char* mine = buf + slot * per_slot;
    run_item(L, t0, std::min(s.chunk, tiles - t0), kb0, std::min(panels, kb0 + per_group),
             reinterpret_cast<uint8_t*>(mine), reinterpret_cast<float*>(mine + v_bytes));
  });
  return y;
}
