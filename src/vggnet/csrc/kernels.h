// The compiled kernels of vggnet.native: declarations and what the kernels share.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace vggnet {

// 3x3 conv + bias (+ ReLU) as Winograd F(4x4, 3x3) in fp32 (winograd_f32.cpp).
at::Tensor conv3x3_f4(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, bool relu, int64_t k,
                      int64_t chunk, int64_t groups);

// 3x3 conv + bias (+ ReLU) as Winograd F(2x2, 3x3) with int8 GEMMs in the Winograd domain (winograd_int8.cpp).
at::Tensor conv3x3_f2_int8(const at::Tensor& x, const at::Tensor& u, const at::Tensor& comp, const at::Tensor& scale,
                           const at::Tensor& inv_s, const at::Tensor& zero_point, const at::Tensor& bias, bool relu,
                           int64_t k, int64_t chunk, int64_t groups);

// Whether this CPU has AVX-512 VNNI (vpdpbusd), which the int8 kernel needs.
bool cpu_has_vnni();

// Grow-only scratch of the calling thread, 64-byte aligned: large buffers allocated once, not per call
// (a fresh allocation of many MB is a page fault per 4 kB on every call).
inline void* scratch(int64_t bytes) {
  thread_local std::vector<char> buffer;
  if (static_cast<int64_t>(buffer.size()) < bytes + 64) buffer.resize(bytes + 64);
  auto address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<void*>((address + 63) & ~uintptr_t(63));
}

// How a layer's tiles become work items: chunks of `chunk` tiles, the output channels of each chunk in
// `groups` groups of whole 64-wide panels; item i is chunk i / groups, panel group i % groups.
struct Split {
  int64_t chunk, chunks, groups;
};

// A chunk's transformed tiles (tile_bytes each) take about 1 MB, so they stay in one core's L2 between the
// three steps. Every chunk reads all of U (u_bytes): where U is too large for the L3, chunks grow to 12 MB
// so there are fewer of them. With fewer than two chunks a thread (the deep layers at batch 1), each
// chunk's output channels are split between the threads instead, so U is still read about once.
// chunk and groups > 0 override the choice (tests).
inline Split split(int64_t tiles, int64_t tile_bytes, int64_t u_bytes, int64_t panels, int64_t chunk, int64_t groups) {
  const int64_t threads = at::get_num_threads();
  if (chunk <= 0) {
    chunk = std::max<int64_t>(6, (int64_t(1) << 20) / tile_bytes);
    if (u_bytes > (int64_t(12) << 20)) chunk = std::max<int64_t>(chunk, (int64_t(12) << 20) / tile_bytes);
  }
  chunk = std::min(chunk, tiles);
  const int64_t chunks = (tiles + chunk - 1) / chunk;
  if (groups <= 0) groups = chunks >= 2 * threads ? 1 : (2 * threads + chunks - 1) / chunks;
  return {chunk, chunks, std::max<int64_t>(1, std::min(groups, panels))};
}

// body(i, slot) for i in [0, items) on every thread; items are handed out as threads come free, so a
// descheduled thread delays no one; slot (0 .. threads-1) names the caller's share of the scratch.
template <class Body>
void for_each_item(int64_t items, Body body) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    const int64_t slot = at::get_thread_num();
    for (int64_t i = next++; i < items; i = next++) body(i, slot);
  });
}

}  // namespace vggnet
