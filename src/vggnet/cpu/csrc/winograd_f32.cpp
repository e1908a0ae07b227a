// Winograd F(4x4, 3x3) for VGG's 3x3 / stride 1 / padding 1 convolutions, fp32, AVX-512 or AVX2 (simd.h).
//
// One call computes a whole layer, conv + bias (+ ReLU) (+ VGG's 2x2 max pool), from NHWC input to NHWC output:
//   V = B^T d B   every 6x6 input tile d, a vector of channels at a time   (input transform)
//   M[p] = V[p] U[p]   for each of the 36 tile positions p, a GEMM over C    (U = G g G^T, transformed once)
//   Y = A^T M A + bias  every tile                                          (output transform)
// The tiles go through in chunks (kernels.h: split), each chunk (or a group of its output channels) by
// one thread from start to end, so its V and M stay in that core's cache and the threads never wait for
// each other between the three steps. A 4x4 output tile starts at even rows and columns, so it holds four whole
// windows of VGG's max pool (2x2, stride 2): with `pool` the tile is pooled as it is made, and the full-size map
// is never written nor read again.
// Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016), give the algorithm.

#include <algorithm>

#include "kernels.h"
#include "simd.h"

namespace {

using namespace vggnet::simd;

constexpr int kTile = 6;           // input tile side, m + 2
constexpr int kOut = 4;            // output tile side, m
constexpr int kPositions = 36;     // kTile * kTile

// 1-D input transform B^T d of F(4, 3) (points 0, 1, -1, 2, -2, infinity).
inline void input_1d(const vec d[6], vec t[6]) {
  const vec four = set1(4.f), five = set1(5.f), two = set1(2.f);
  vec a = fnmadd(four, d[2], d[4]);  // d4 - 4 d2
  vec b = fnmadd(four, d[1], d[3]);  // d3 - 4 d1
  vec c = sub(d[4], d[2]);
  vec e = mul(two, sub(d[3], d[1]));
  t[0] = fmadd(four, d[0], fnmadd(five, d[2], d[4]));
  t[1] = add(a, b);
  t[2] = sub(a, b);
  t[3] = add(c, e);
  t[4] = sub(c, e);
  t[5] = fmadd(four, d[1], fnmadd(five, d[3], d[5]));
}

// 1-D output transform A^T m of F(4, 3).
inline void output_1d(const vec m[6], vec o[4]) {
  vec s12 = add(m[1], m[2]), d12 = sub(m[1], m[2]);
  vec s34 = add(m[3], m[4]), d34 = sub(m[3], m[4]);
  o[0] = add(add(m[0], s12), s34);
  o[1] = fmadd(set1(2.f), d34, d12);
  o[2] = fmadd(set1(4.f), s34, s12);
  o[3] = add(fmadd(set1(8.f), d34, d12), m[5]);
}

struct Layer {
  const float* x;     // (N, H, W, C)
  const float* u;     // (36, K / kPanel, C, kPanel) packed transformed weights, K padded to a multiple of kPanel
  const float* bias;  // (K)
  float* y;           // (N, H, W, K), or (N, H/2, W/2, K) with pool (rounded down, as torch's max pool)
  int64_t n, h, w, c, k, kp, th, tw;
  bool relu, pool;
};

// V[p][t][c]: the transformed tile t (of the chunk) at position p; plane stride `vs` floats.
void input_transform(const Layer& L, int64_t tile, int64_t t, float* V, int64_t vs) {
  const int64_t img = tile / (L.th * L.tw), rest = tile % (L.th * L.tw);
  const int64_t y0 = (rest / L.tw) * kOut - 1, x0 = (rest % L.tw) * kOut - 1;
  const bool inside = y0 >= 0 && x0 >= 0 && y0 + kTile <= L.h && x0 + kTile <= L.w;
  const float* base = L.x + img * L.h * L.w * L.c;
  alignas(64) float tmp[kTile][kTile][kLanes];
  for (int64_t cv = 0; cv < L.c; cv += kLanes) {
    for (int j = 0; j < kTile; ++j) {  // columns: t[.][j] = B^T d[.][j]
      vec d[6], t6[6];
      const int64_t xx = x0 + j;
      for (int i = 0; i < kTile; ++i) {
        const int64_t yy = y0 + i;
        if (inside || (yy >= 0 && yy < L.h && xx >= 0 && xx < L.w))
          d[i] = load(base + (yy * L.w + xx) * L.c + cv);
        else
          d[i] = zero();
      }
      input_1d(d, t6);
      for (int i = 0; i < kTile; ++i) store(tmp[i][j], t6[i]);
    }
    for (int i = 0; i < kTile; ++i) {  // rows: v[i][.] = t[i][.] B
      vec r[6], v[6];
      for (int j = 0; j < kTile; ++j) r[j] = load(tmp[i][j]);
      input_1d(r, v);
      for (int j = 0; j < kTile; ++j) store(V + (i * kTile + j) * vs + t * L.c + cv, v[j]);
    }
  }
}

// Y = A^T M A + bias (+ ReLU) for tile t of the chunk, output channels k0 .. k1, cut at the image's edge; with
// L.pool the max of each 2x2 window instead (then bias and ReLU: both monotone, so the order does not matter).
void output_transform(const Layer& L, int64_t tile, int64_t t, const float* M, int64_t ms, int64_t k0, int64_t k1) {
  const int64_t img = tile / (L.th * L.tw), rest = tile % (L.th * L.tw);
  const int64_t y0 = (rest / L.tw) * kOut, x0 = (rest % L.tw) * kOut;
  const int64_t rows = std::min<int64_t>(kOut, L.h - y0), cols = std::min<int64_t>(kOut, L.w - x0);
  const int64_t ho = L.h / 2, wo = L.w / 2;  // the pooled map's size
  const int64_t prow = std::min<int64_t>(2, ho - y0 / 2), pcol = std::min<int64_t>(2, wo - x0 / 2);
  float* base = L.pool ? L.y + img * ho * wo * L.k : L.y + img * L.h * L.w * L.k;
  alignas(64) float tmp[kOut][kTile][kLanes];
  const vec z = zero();
  for (int64_t kv = k0; kv < k1; kv += kLanes) {
    for (int j = 0; j < kTile; ++j) {  // columns
      vec m[6], o[4];
      for (int i = 0; i < kTile; ++i) m[i] = load(M + (i * kTile + j) * ms + t * L.kp + kv);
      output_1d(m, o);
      for (int i = 0; i < kOut; ++i) store(tmp[i][j], o[i]);
    }
    const vec b = load(L.bias + kv);
    if (L.pool) {
      for (int pi = 0; pi < prow; ++pi) {  // output rows 2 pi and 2 pi + 1, max-pooled in pairs
        vec r[6], top[4], bottom[4];
        for (int j = 0; j < kTile; ++j) r[j] = load(tmp[2 * pi][j]);
        output_1d(r, top);
        for (int j = 0; j < kTile; ++j) r[j] = load(tmp[2 * pi + 1][j]);
        output_1d(r, bottom);
        for (int pj = 0; pj < pcol; ++pj) {
          vec v = add(max(max(top[2 * pj], top[2 * pj + 1]), max(bottom[2 * pj], bottom[2 * pj + 1])), b);
          if (L.relu) v = max(v, z);
          store(base + ((y0 / 2 + pi) * wo + x0 / 2 + pj) * L.k + kv, v);
        }
      }
      continue;
    }
    for (int i = 0; i < rows; ++i) {  // rows
      vec r[6], o[4];
      for (int j = 0; j < kTile; ++j) r[j] = load(tmp[i][j]);
      output_1d(r, o);
      for (int j = 0; j < cols; ++j) {
        vec v = add(o[j], b);
        if (L.relu) v = max(v, z);
        store(base + ((y0 + i) * L.w + x0 + j) * L.k + kv, v);
      }
    }
  }
}

// acc[R x kPanel] = A[R x C] (rows lda apart) . B[C x kPanel] (packed, kPanel floats per c), stored to Cm (rows
// ldc apart).
template <int R>
inline void micro(const float* A, int64_t lda, const float* B, int64_t C, float* Cm, int64_t ldc) {
  vec acc[R][kVectors];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kVectors; ++j) acc[r][j] = zero();
#pragma GCC unroll 2
  for (int64_t c = 0; c < C; ++c) {
    const float* b = B + c * kPanel;
    vec bv[kVectors];
    for (int j = 0; j < kVectors; ++j) bv[j] = load(b + kLanes * j);
    for (int r = 0; r < R; ++r) {
      const vec a = set1(A[r * lda + c]);
      for (int j = 0; j < kVectors; ++j) acc[r][j] = fmadd(a, bv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kVectors; ++j) store(Cm + r * ldc + kLanes * j, acc[r][j]);
}

// M[p][t][kb*kPanel : (kb+1)*kPanel] for the chunk's `tc` tiles.
void gemm(const Layer& L, int64_t p, int64_t kb, int64_t tc, const float* V, int64_t vs, float* M, int64_t ms) {
  const float* A = V + p * vs;
  const float* B = L.u + (p * (L.kp / kPanel) + kb) * L.c * kPanel;
  float* Cm = M + p * ms + kb * kPanel;
  int64_t t = 0;
  for (; t + kRows <= tc; t += kRows) micro<kRows>(A + t * L.c, L.c, B, L.c, Cm + t * L.kp, L.kp);
  switch (tc - t) {
    case 5: micro<5>(A + t * L.c, L.c, B, L.c, Cm + t * L.kp, L.kp); break;
    case 4: micro<4>(A + t * L.c, L.c, B, L.c, Cm + t * L.kp, L.kp); break;
    case 3: micro<3>(A + t * L.c, L.c, B, L.c, Cm + t * L.kp, L.kp); break;
    case 2: micro<2>(A + t * L.c, L.c, B, L.c, Cm + t * L.kp, L.kp); break;
    case 1: micro<1>(A + t * L.c, L.c, B, L.c, Cm + t * L.kp, L.kp); break;
    default: break;
  }
}

// Tiles t0 .. t0+tc, output panels kb0 .. kb1, start to end on the calling thread.
void run_item(const Layer& L, int64_t t0, int64_t tc, int64_t kb0, int64_t kb1, float* V, float* M) {
  const int64_t vs = tc * L.c, ms = tc * L.kp;
  for (int64_t t = 0; t < tc; ++t) input_transform(L, t0 + t, t, V, vs);
  for (int64_t p = 0; p < kPositions; ++p)
    for (int64_t kb = kb0; kb < kb1; ++kb) gemm(L, p, kb, tc, V, vs, M, ms);
  for (int64_t t = 0; t < tc; ++t) output_transform(L, t0 + t, t, M, ms, kb0 * kPanel, std::min(L.k, kb1 * kPanel));
}

}  // namespace

// x: (N, C, H, W) fp32 in channels-last memory; u: (36, K/P, C, P) packed, P = kPanel; bias: (K); chunk, groups:
// 0 = auto.
at::Tensor vggnet::conv3x3_f4(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, bool relu, bool pool,
                              int64_t k, int64_t chunk, int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "x must be a float (N, C, H, W) tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be channels-last");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(c % 16 == 0 && k % 16 == 0, "channels must be multiples of 16");
  TORCH_CHECK(u.is_contiguous() && u.dim() == 4 && u.size(0) == kPositions && u.size(2) == c && u.size(3) == kPanel &&
                  u.size(1) * kPanel >= k,
              "u must be packed (36, K/", kPanel, ", C, ", kPanel, ") for this build");
  TORCH_CHECK(bias.is_contiguous() && bias.numel() == k, "bias must hold K values");
  TORCH_CHECK(!pool || (h >= 2 && w >= 2), "pool needs a map of at least 2x2");
  auto y = vggnet::Buffers::channels_last(n, k, pool ? h / 2 : h, pool ? w / 2 : w, x.options());
  Layer L{x.data_ptr<float>(), u.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(),
          n, h, w, c, k, u.size(1) * kPanel, (h + kOut - 1) / kOut, (w + kOut - 1) / kOut, relu, pool};
  const int64_t tiles = n * L.th * L.tw, panels = L.kp / kPanel;
  const auto s =
      vggnet::split(tiles, kPositions * (c + L.kp) * 4, kPositions * c * L.kp * 4, panels, chunk, groups, kRows);
  const int64_t per_slot = kPositions * s.chunk * (c + L.kp), per_group = (panels + s.groups - 1) / s.groups;
  float* buf = static_cast<float*>(vggnet::scratch(per_slot * at::get_num_threads() * sizeof(float)));
  vggnet::for_each_item(s.chunks * s.groups, [&](int64_t i, int64_t slot) {
    const int64_t t0 = (i / s.groups) * s.chunk, kb0 = (i % s.groups) * per_group;
    if (kb0 >= panels) return;  // an empty group when the panels do not divide evenly
    float* mine = buf + slot * per_slot;
    run_item(L, t0, std::min(s.chunk, tiles - t0), kb0, std::min(panels, kb0 + per_group), mine,
             mine + kPositions * s.chunk * c);
  });
  return y;
}
