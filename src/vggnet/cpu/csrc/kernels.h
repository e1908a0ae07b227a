// The compiled kernels of vggnet.cpu.compiled: declarations and what the kernels share (the vector type of
// each build is in simd.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

namespace vggnet {

// 3x3 conv + bias (+ ReLU) (+ 2x2 max pool) as Winograd F(4x4, 3x3) in fp32 (winograd_f32.cpp).
at::Tensor conv3x3_f4(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, bool relu, bool pool,
                      int64_t k, int64_t chunk, int64_t groups);

// 3x3 conv + bias (+ ReLU) (+ 2x2 max pool) as Winograd F(2x2, 3x3) with int8 GEMMs in the Winograd domain
// (winograd_int8.cpp).
at::Tensor conv3x3_f2_int8(const at::Tensor& x, const at::Tensor& u, const at::Tensor& comp, const at::Tensor& scale,
                           const at::Tensor& inv_s, const at::Tensor& zero_point, const at::Tensor& bias, bool relu,
                           bool pool, int64_t k, int64_t chunk, int64_t groups);

// A direct 3x3 conv + bias (+ ReLU) for few input channels (VGG's conv1_1 on RGB) (conv_small.cpp).
at::Tensor conv3x3_small(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool relu);

// y = x W^T + bias (+ ReLU), W int8 with a scale per output, x rounded to u8 per row (linear.cpp).
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& w, const at::Tensor& wsum, const at::Tensor& wscale,
                       const at::Tensor& bias, bool relu);

// y = x W^T + bias (+ ReLU) in fp32, W packed (Kout_p / 16, Kin, 16) (linear.cpp).
at::Tensor linear_f32(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool relu);

// Whether the int8 kernels run here: the CPU has the vpdpbusd of this build (AVX-512 VNNI, or AVX-VNNI).
bool cpu_has_vnni();

// Grow-only scratch of the calling thread, 64-byte aligned: large buffers allocated once, not per call
// (a fresh allocation of many MB is a page fault per 4 kB on every call).
inline void* scratch(int64_t bytes) {
  thread_local std::vector<char> buffer;
  if (static_cast<int64_t>(buffer.size()) < bytes + 64) buffer.resize(bytes + 64);
  auto address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<void*>((address + 63) & ~uintptr_t(63));
}

// Output buffers that come back. A fresh allocation of many MB is a page fault per 4 kB on every call (VGG16
// at batch 8 makes hundreds of MB of activations per forward), and torch's CPU allocator hands large blocks
// back to the OS when they are freed. A kernel's output is taken from here instead: when the tensor is freed
// its block returns to this cache, and the next call of the same size reuses it, already mapped. Blocks not
// reused are freed oldest first once the cache holds more than kCachedBytes (the most it adds to a process).
class Buffers {
 public:
  static constexpr size_t kCachedBytes = size_t(512) << 20;

  // An (N, C, H, W) float tensor in channels-last memory, from the cache where a block of about its size is free.
  static at::Tensor channels_last(int64_t n, int64_t c, int64_t h, int64_t w, const at::TensorOptions& options) {
    const auto [block, bytes] = get().take(std::max<size_t>(64, size_t(n * c * h * w) * sizeof(float)));
    return at::from_blob(
        block, {n, c, h, w}, {h * w * c, 1, w * c, c}, [bytes = bytes](void* p) { get().give(p, bytes); },
        options.dtype(at::kFloat).device(at::kCPU));
  }

  static Buffers& get() {
    static Buffers* buffers = new Buffers;  // never destroyed: tensors may be freed during static destruction
    return *buffers;
  }

 private:
  // The smallest free block of `bytes` to 5/4 `bytes` (the sizes of one network's layers repeat exactly; the
  // slack serves images of nearly the same size), or a new one. Returns the block and its size.
  std::pair<void*, size_t> take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it)
        if (it->second >= bytes && it->second <= bytes / 4 * 5 && (best == free_.end() || it->second < best->second))
          best = it;
      if (best != free_.end()) {
        const auto found = *best;
        cached_ -= found.second;
        free_.erase(best);
        return found;
      }
    }
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    TORCH_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes");
    return {p, bytes};
  }

  void give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.emplace_front(p, bytes);
    cached_ += bytes;
    while (cached_ > kCachedBytes && !free_.empty()) {  // the oldest first
      cached_ -= free_.back().second;
      std::free(free_.back().first);
      free_.pop_back();
    }
  }

  std::mutex mutex_;
  std::list<std::pair<void*, size_t>> free_;  // newest first
  size_t cached_ = 0;
};

// How a layer's tiles become work items: chunks of `chunk` tiles, the output channels of each chunk in
// `groups` groups of whole 64-wide panels; item i is chunk i / groups, panel group i % groups.
struct Split {
  int64_t chunk, chunks, groups;
};

// A chunk's transformed tiles (tile_bytes each) take about 1 MB, so they stay in one core's L2 between the
// three steps. Every chunk reads all of U (u_bytes): where U is too large for the L3, chunks grow to 12 MB
// so there are fewer of them. A chunk is a whole number of the GEMM micro-kernel's `rows`: a remainder runs
// with fewer accumulators, too few to hide the FMA latency. With fewer than two chunks a thread (the deep
// layers at batch 1), each chunk's output channels are split between the threads instead, so U is still read
// about once. chunk and groups > 0 override the choice (tests).
inline Split split(int64_t tiles, int64_t tile_bytes, int64_t u_bytes, int64_t panels, int64_t chunk, int64_t groups,
                   int64_t rows) {
  const int64_t threads = at::get_num_threads();
  if (chunk <= 0) {
    chunk = std::max<int64_t>(rows, (int64_t(1) << 20) / tile_bytes);
    if (u_bytes > (int64_t(12) << 20)) chunk = std::max<int64_t>(chunk, (int64_t(12) << 20) / tile_bytes);
    chunk = (chunk + rows - 1) / rows * rows;
  }
  chunk = std::min(chunk, tiles);
  const int64_t chunks = (tiles + chunk - 1) / chunk;
  if (groups <= 0) groups = chunks >= 2 * threads ? 1 : (2 * threads + chunks - 1) / chunks;
  return {chunk, chunks, std::max<int64_t>(1, std::min(groups, panels))};
}

// The kernels' own workers. An OpenMP region ends at a barrier that waits for every thread, even one the
// OS has not yet run, so on a busy machine a short layer waits out a whole time slice. Here the calling thread
// works through the items at once, the workers join as they wake, and the call waits only for workers
// that took an item; a worker that wakes after the last item was taken goes back to sleep.
class Workers {
 public:
  // body(i, slot) for i in [0, items) on the calling thread (slot 0) and up to threads - 1 workers.
  template <class Body>
  void run(int64_t items, int64_t threads, Body& body) {
    std::lock_guard<std::mutex> one_call(calls_);  // callers on several Python threads take turns
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int64_t>(threads_.size()) < threads - 1) {
        const int64_t slot = static_cast<int64_t>(threads_.size()) + 1;
        threads_.emplace_back([this, slot] { loop(slot); });
        threads_.back().detach();
      }
      job_ = {&call<Body>, &body, items, threads};
      next_ = 0;
      ++generation_;
      open_ = true;
    }
    wake_.notify_all();
    take(0);
    std::unique_lock<std::mutex> lock(mutex_);
    open_ = false;  // every item is taken: late risers stay out
    done_.wait(lock, [this] { return active_ == 0; });
  }

  static Workers& get() {
    static Workers* workers = new Workers;  // never destroyed: detached threads outlive static destructors
    return *workers;
  }

 private:
  struct Job {
    void (*call)(void*, int64_t, int64_t);
    void* body;
    int64_t items, threads;
  };

  template <class Body>
  static void call(void* body, int64_t i, int64_t slot) {
    (*static_cast<Body*>(body))(i, slot);
  }

  void take(int64_t slot) {
    for (int64_t i = next_++; i < job_.items; i = next_++) job_.call(job_.body, i, slot);
  }

  void loop(int64_t slot) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (!open_ || slot >= job_.threads) continue;
        ++active_;
      }
      take(slot);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  std::mutex calls_, mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  Job job_{};
  std::atomic<int64_t> next_{0};
  uint64_t generation_ = 0;
  bool open_ = false;
  int64_t active_ = 0;
};

// body(i, slot) for i in [0, items) on torch's intra-op thread count; slot (0 .. threads-1) names the
// thread's share of the scratch.
template <class Body>
void for_each_item(int64_t items, Body body) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), items);
  if (threads <= 1) {
    for (int64_t i = 0; i < items; ++i) body(i, 0);
    return;
  }
  Workers::get().run(items, threads, body);
}

}  // namespace vggnet
