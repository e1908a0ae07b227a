// A direct 3x3 conv (stride 1, padding 1) + bias (+ ReLU) for layers with few input channels: VGG's conv1_1,
// which sees the RGB image. Winograd gains nothing there (3 input channels) and the GEMM libraries pad 3
// channels out to a vector; here each output pixel is 9 C broadcasts times K/L FMAs (L floats a vector, simd.h),
// six pixels at a time.
// fp32; the input in any memory layout (an NCHW image needs no copy to channels-last first), the output
// NHWC. Work items are output rows.

#include "kernels.h"
#include "simd.h"

namespace {

using namespace vggnet::simd;

struct Layer {
  const float* x;     // (N, C, H, W), strides sn, sc, sh, sw
  const float* w;     // (3, 3, C, K)
  const float* bias;  // (K)
  float* y;           // (N, H, W, K)
  int64_t n, h, w_, c, k, sn, sc, sh, sw;
  bool relu;
};

constexpr int kPixels = kRows;  // pixels x kVectors accumulators: the GEMM micro-kernel's blocking (simd.h)

// R output pixels (x0 .. x0+R-1) of row y, V vectors of output channels from k0. Edge: some input pixels
// of the 3x3 windows lie outside the image (the zero padding); they are skipped.
template <int R, int V, bool Edge>
inline void pixels(const Layer& L, int64_t img, int64_t y, int64_t x0, int64_t k0) {
  vec acc[R][V];
  for (int j = 0; j < V; ++j) {
    const vec b = load(L.bias + k0 + kLanes * j);
    for (int r = 0; r < R; ++r) acc[r][j] = b;
  }
  for (int dy = 0; dy < 3; ++dy) {
    const int64_t yy = y + dy - 1;
    if (yy < 0 || yy >= L.h) continue;
    const float* row = L.x + img * L.sn + yy * L.sh;
    for (int dx = 0; dx < 3; ++dx) {
      for (int64_t ci = 0; ci < L.c; ++ci) {
        const float* wk = L.w + ((dy * 3 + dx) * L.c + ci) * L.k + k0;
        vec wv[V];
        for (int j = 0; j < V; ++j) wv[j] = load(wk + kLanes * j);
        for (int r = 0; r < R; ++r) {
          const int64_t xx = x0 + r + dx - 1;
          if (Edge && (xx < 0 || xx >= L.w_)) continue;
          const vec a = set1(row[xx * L.sw + ci * L.sc]);
          for (int j = 0; j < V; ++j) acc[r][j] = fmadd(a, wv[j], acc[r][j]);
        }
      }
    }
  }
  const vec z = zero();
  float* out = L.y + ((img * L.h + y) * L.w_ + x0) * L.k + k0;
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V; ++j) store(out + r * L.k + kLanes * j, L.relu ? max(acc[r][j], z) : acc[r][j]);
}

template <int V>
void row(const Layer& L, int64_t img, int64_t y, int64_t k0) {
  int64_t x0 = 0;
  if (L.w_ >= kPixels) {
    pixels<kPixels, V, true>(L, img, y, 0, k0);  // the left edge
    for (x0 = kPixels; x0 + kPixels < L.w_; x0 += kPixels) pixels<kPixels, V, false>(L, img, y, x0, k0);
  }
  for (; x0 < L.w_; ++x0) pixels<1, V, true>(L, img, y, x0, k0);  // the right edge and what is left
}

}  // namespace

at::Tensor vggnet::conv3x3_small(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool relu) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "x must be a float (N, C, H, W) tensor");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.dim() == 4 && w.size(0) == 3 &&
                  w.size(1) == 3 && w.size(2) == c && w.size(3) % 16 == 0,
              "w must be float (3, 3, C, K), K a multiple of 16");
  const int64_t k = w.size(3);
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() && bias.numel() == k, "bias must hold K floats");
  auto y = vggnet::Buffers::channels_last(n, k, h, wd, x.options());
  const Layer L{x.data_ptr<float>(), w.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(),
                n, h, wd, c, k, x.stride(0), x.stride(1), x.stride(2), x.stride(3), relu};
  vggnet::for_each_item(n * h, [&](int64_t i, int64_t) {
    const int64_t img = i / h, yy = i % h;
    int64_t k0 = 0;
    for (; k0 + kPanel <= k; k0 += kPanel) row<kVectors>(L, img, yy, k0);
    for (; k0 < k; k0 += kLanes) row<1>(L, img, yy, k0);
  });
  return y;
}
