// The FC layers. FC6 and FC7 of the int8 net in int8: y = x W^T + b (+ ReLU) with W int8 (a scale per output),
// x rounded to u8 per row (its own scale and zero point, from the row's range), the products summed by
// vpdpbusd (AVX-512 VNNI, or AVX-VNNI in the avx2 build: simd.h). Its FC8, and all three FC layers of the fast fp32
// path, in fp32 (FMA, AVX-512 or AVX2: simd.h). At batch 1 these layers read each weight once per call, so
// they run at the speed of memory; the kernels stream the weights once for a few rows at a time, K in slices
// that stay in the core's cache while the next rows reuse them. They run on the kernels' own workers
// (kernels.h), so a forward pass never wakes torch's OpenMP pool, whose threads spin for a while after every
// parallel region and take a core from the next layer, and wait at its end for a thread the OS has not run.

#include <immintrin.h>

#include <cmath>

#include "kernels.h"
#include "simd.h"

namespace {

constexpr int kBlock = 64;        // outputs per work item: four 16-wide groups of the packed weights
constexpr int64_t kSlice = 1024;  // int8 inputs per slice: 64 KB of weights per item, reused by every row pass

// The fp32 layers: acc[R x kCols columns from oc] (fp32, in memory between slices, rows kBlock apart) +=
// x[rows, k0:k1] . W[oc:oc+kCols, k0:k1]^T, W packed (Kout_p / 16, Kin, 16). A slice of an item's weights is
// 32 KB, so the row passes after the first read it from L1.
namespace simd = vggnet::simd;
constexpr int kCols = 4 * simd::kLanes;                 // columns per pass: 4 vectors (64 with AVX-512, 32 with AVX2)
constexpr int kPassRows = simd::kLanes == 16 ? 4 : 2;  // rows x 4 accumulators + 4 weights + 1 broadcast in registers
constexpr int64_t kF32Slice = 128;                     // inputs per slice: 128 x 64 floats

template <int R>
inline void slice_f32(const float* x, int64_t kin, const float* w, int64_t row0, int64_t oc, int64_t k0, int64_t k1,
                      float* acc) {
  simd::vec a[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) a[r][j] = simd::load(acc + r * kBlock + simd::kLanes * j);
  const float* wj[4];  // the vector's 16-wide group of outputs, at its offset within the group
  for (int j = 0; j < 4; ++j) {
    const int64_t col = oc + simd::kLanes * j;
    wj[j] = w + (col / 16) * kin * 16 + col % 16;
  }
  for (int64_t k = k0; k < k1; ++k) {
    simd::vec wv[4];
    for (int j = 0; j < 4; ++j) wv[j] = simd::load(wj[j] + k * 16);
    for (int r = 0; r < R; ++r) {
      const simd::vec xv = simd::set1(x[(row0 + r) * kin + k]);
      for (int j = 0; j < 4; ++j) a[r][j] = simd::fmadd(xv, wv[j], a[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) simd::store(acc + r * kBlock + simd::kLanes * j, a[r][j]);
}

void item_f32(const float* x, int64_t n, int64_t kin, const float* w, const float* bias, int64_t kout, bool relu,
              float* y, int64_t o0, float* acc) {
  for (int64_t row0 = 0; row0 < n; row0 += kPassRows) {
    const int64_t rows = std::min<int64_t>(kPassRows, n - row0);
    std::fill(acc, acc + rows * kBlock, 0.f);
    for (int64_t k0 = 0; k0 < kin; k0 += kF32Slice) {
      const int64_t k1 = std::min(kin, k0 + kF32Slice);
      for (int64_t oc = o0; oc < o0 + kBlock; oc += kCols) {
        float* part = acc + (oc - o0);
        switch (rows) {
          case 4: slice_f32<4>(x, kin, w, row0, oc, k0, k1, part); break;
          case 3: slice_f32<3>(x, kin, w, row0, oc, k0, k1, part); break;
          case 2: slice_f32<2>(x, kin, w, row0, oc, k0, k1, part); break;
          default: slice_f32<1>(x, kin, w, row0, oc, k0, k1, part); break;
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = o0; o < std::min(kout, o0 + kBlock); ++o) {
        const float v = acc[r * kBlock + (o - o0)] + bias[o];
        y[(row0 + r) * kout + o] = relu ? std::max(v, 0.f) : v;
      }
  }
}

}  // namespace

VGGNET_INT8_BEGIN
namespace {

struct Layer {
  const uint8_t* xq;     // (N, Kin4) u8
  const int32_t* zero;   // (N) the rows' zero points
  const float* xscale;   // (N)
  const int8_t* w;       // (Kout_p / 16, Kin4 / 4, 16, 4)
  const int32_t* wsum;   // (Kout_p) sum over k of W[o][k]
  const float* wscale;   // (Kout_p)
  const float* bias;     // (Kout)
  float* y;              // (N, Kout)
  int64_t n, kin4, kout;
  bool relu;
};

// acc[R x kCols columns from oc] (int32, in memory between slices, rows kBlock apart) += xq[rows, k0:k1] .
// W[oc:oc+kCols, k0:k1]^T; a vector holds kLanes outputs x 4 inputs, a 16-wide group of W one or two vectors.
template <int R>
inline void slice(const Layer& L, int64_t row0, int64_t oc, int64_t k0, int64_t k1, int32_t* acc) {
  simd::ivec a[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) a[r][j] = simd::iload(acc + r * kBlock + simd::kLanes * j);
  const int8_t* w[4];
  for (int j = 0; j < 4; ++j) {
    const int64_t col = oc + simd::kLanes * j;
    w[j] = L.w + (col / 16) * (L.kin4 / 4) * 64 + (col % 16) * 4;
  }
  for (int64_t k = k0; k < k1; k += 4) {
    simd::ivec wv[4];
    for (int j = 0; j < 4; ++j) wv[j] = simd::iload(w[j] + k * 16);
    for (int r = 0; r < R; ++r) {
      int32_t four;
      __builtin_memcpy(&four, L.xq + (row0 + r) * L.kin4 + k, 4);
      const simd::ivec x = simd::iset1(four);
      for (int j = 0; j < 4; ++j) a[r][j] = simd::dpbusd(a[r][j], x, wv[j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) simd::istore(acc + r * kBlock + simd::kLanes * j, a[r][j]);
}

void item(const Layer& L, int64_t o0, int32_t* acc) {
  for (int64_t row0 = 0; row0 < L.n; row0 += kPassRows) {
    const int64_t rows = std::min<int64_t>(kPassRows, L.n - row0);
    std::fill(acc, acc + rows * kBlock, 0);
    for (int64_t k0 = 0; k0 < L.kin4; k0 += kSlice) {
      const int64_t k1 = std::min(L.kin4, k0 + kSlice);
      for (int64_t oc = o0; oc < o0 + kBlock; oc += kCols) {
        int32_t* part = acc + (oc - o0);
        switch (rows) {
          case 4: slice<4>(L, row0, oc, k0, k1, part); break;
          case 3: slice<3>(L, row0, oc, k0, k1, part); break;
          case 2: slice<2>(L, row0, oc, k0, k1, part); break;
          default: slice<1>(L, row0, oc, k0, k1, part); break;
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = row0 + r;
      for (int64_t o = o0; o < std::min(L.kout, o0 + kBlock); ++o) {
        const int32_t sum = acc[r * kBlock + (o - o0)] - L.zero[row] * L.wsum[o];
        float v = static_cast<float>(sum) * (L.xscale[row] * L.wscale[o]) + L.bias[o];
        L.y[row * L.kout + o] = L.relu ? std::max(v, 0.f) : v;
      }
    }
  }
}

// A row of x to u8 over its range [min(x, 0), max(x, 0)]: q = round(x * (1 / s)) + z, in fp32 as
// vggnet/cpu/fc_layers.py's reference computes it; s = (hi - lo) / 255 and z = round(-lo / s).
void quantize_row(const float* x, int64_t kin, uint8_t* q, int32_t& zero, float& scale) {
  constexpr int n = simd::kLanes;
  simd::vec lov = simd::zero(), hiv = simd::zero();
  int64_t k = 0;
  for (; k + n <= kin; k += n) {
    const simd::vec v = simd::load(x + k);
    lov = simd::min(lov, v), hiv = simd::max(hiv, v);
  }
  alignas(64) float lanes[2][n];
  simd::store(lanes[0], lov), simd::store(lanes[1], hiv);
  float lo = *std::min_element(lanes[0], lanes[0] + n), hi = *std::max_element(lanes[1], lanes[1] + n);
  for (int64_t t = k; t < kin; ++t) lo = std::min(lo, x[t]), hi = std::max(hi, x[t]);
  scale = hi > lo ? (hi - lo) / 255.f : 1.f;
  zero = static_cast<int32_t>(std::nearbyint(-lo / scale));
  const float inv = 1.f / scale;
  const simd::vec invv = simd::set1(inv), zv = simd::set1(static_cast<float>(zero));
  for (k = 0; k + n <= kin; k += n) simd::store_u8(q + k, simd::add(simd::round(simd::mul(simd::load(x + k), invv)), zv));
  for (; k < kin; ++k) {
    const float v = std::nearbyint(x[k] * inv) + static_cast<float>(zero);
    q[k] = static_cast<uint8_t>(std::min(255.f, std::max(0.f, v)));
  }
}

}  // namespace
VGGNET_INT8_END

at::Tensor vggnet::linear_f32(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool relu) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be a float (N, K) tensor");
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.dim() == 3 && w.size(2) == 16 && w.size(0) % 4 == 0,
              "w must be float packed (Kout_p / 16, Kin, 16), Kout_p a multiple of 64");
  const int64_t n = x.size(0), kin = x.size(1), kout = bias.numel();
  TORCH_CHECK(w.size(1) == kin, "x has ", kin, " inputs; the weights take ", w.size(1));
  TORCH_CHECK(kout <= w.size(0) * 16 && bias.scalar_type() == at::kFloat && bias.is_contiguous(),
              "bias must hold Kout floats");
  const at::Tensor xc = x.contiguous();
  auto y = at::empty({n, kout}, x.options());
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  auto* acc = static_cast<float*>(vggnet::scratch(threads * kPassRows * kBlock * sizeof(float)));
  vggnet::for_each_item(w.size(0) / 4, [&](int64_t i, int64_t slot) {
    item_f32(xc.data_ptr<float>(), n, kin, w.data_ptr<float>(), bias.data_ptr<float>(), kout, relu,
             y.data_ptr<float>(), i * kBlock, acc + slot * kPassRows * kBlock);
  });
  return y;
}

at::Tensor vggnet::linear_int8(const at::Tensor& x, const at::Tensor& w, const at::Tensor& wsum,
                               const at::Tensor& wscale, const at::Tensor& bias, bool relu) {
  TORCH_CHECK(vggnet::cpu_has_vnni(), "linear_int8 needs VNNI, which this CPU lacks (", vggnet::simd::kIsa, " build)");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be a float (N, K) tensor");
  TORCH_CHECK(w.scalar_type() == at::kChar && w.is_contiguous() && w.dim() == 4 && w.size(2) == 16 && w.size(3) == 4 &&
                  w.size(0) % 4 == 0,
              "w must be int8 packed (Kout_p / 16, Kin4 / 4, 16, 4), Kout_p a multiple of 64");
  const int64_t n = x.size(0), kin = x.size(1), kin4 = w.size(1) * 4, kout_p = w.size(0) * 16, kout = bias.numel();
  TORCH_CHECK(kin <= kin4 && kin4 < kin + 4, "x has ", kin, " inputs; the weights take ", kin4);
  TORCH_CHECK(kout <= kout_p && bias.scalar_type() == at::kFloat && bias.is_contiguous(), "bias must hold Kout floats");
  TORCH_CHECK(wsum.scalar_type() == at::kInt && wsum.is_contiguous() && wsum.numel() == kout_p, "wsum must be int32 (Kout_p)");
  TORCH_CHECK(wscale.scalar_type() == at::kFloat && wscale.is_contiguous() && wscale.numel() == kout_p,
              "wscale must be float (Kout_p)");
  const at::Tensor xc = x.contiguous();
  // each row to u8 over its own range (zero kept exact): v = round(x / s) + z
  std::vector<uint8_t> xq(n * kin4, 0);
  std::vector<int32_t> zero(n);
  std::vector<float> xscale(n);
  const float* xp = xc.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) quantize_row(xp + r * kin, kin, xq.data() + r * kin4, zero[r], xscale[r]);
  auto y = at::empty({n, kout}, x.options());
  const Layer L{xq.data(), zero.data(), xscale.data(), w.data_ptr<int8_t>(), wsum.data_ptr<int32_t>(),
                wscale.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(), n, kin4, kout, relu};
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  auto* acc = static_cast<int32_t*>(vggnet::scratch(threads * kPassRows * kBlock * sizeof(int32_t)));
  vggnet::for_each_item(kout_p / kBlock,
                        [&](int64_t i, int64_t slot) { item(L, i * kBlock, acc + slot * kPassRows * kBlock); });
  return y;
}
