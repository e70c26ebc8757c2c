#include "thread_pool.hpp"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define INFLIGHT_CPU_RELAX() _mm_pause()
#else
#define INFLIGHT_CPU_RELAX() std::this_thread::yield()
#endif

namespace inflight {

namespace {
// Spins before yielding the core. Short on purpose: with as many threads as cores, a member that lost
// its core to another process must not make the others burn theirs.
constexpr int spins_before_yield = 2000;
}  // namespace

thread_pool::thread_pool(int num_threads) {
  if (num_threads <= 0) num_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  workers_.reserve(size_t(num_threads_ - 1));
  for (int index = 1; index < num_threads_; ++index) workers_.emplace_back([this, index] { worker_loop(index); });
}

thread_pool::~thread_pool() {
  stopping_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void thread_pool::run_erased(void* context, task_fn task) {
  if (num_threads_ == 1) {
    task(context, 0);
    return;
  }
  task_context_ = context;
  task_ = task;
  running_.store(num_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  task(context, 0);
  int spins = 0;
  while (running_.load(std::memory_order_acquire) != 0) {
    if (++spins < spins_before_yield) INFLIGHT_CPU_RELAX(); else std::this_thread::yield();
  }
}

void thread_pool::worker_loop(int thread_index) {
  uint64_t seen = generation_.load(std::memory_order_acquire);
  for (;;) {
    // Spin a while for the next step (decode steps follow each other closely), then sleep.
    int spins = 0;
    uint64_t current;
    while ((current = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < spins_before_yield * 10) {
        INFLIGHT_CPU_RELAX();
      } else {
        generation_.wait(seen, std::memory_order_acquire);
      }
    }
    seen = current;
    if (stopping_.load(std::memory_order_acquire)) return;
    task_(task_context_, thread_index);
    running_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void thread_pool::barrier() {
  if (num_threads_ == 1) return;
  const uint32_t phase = barrier_phase_.load(std::memory_order_acquire);
  if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == num_threads_ - 1) {
    barrier_count_.store(0, std::memory_order_relaxed);
    barrier_phase_.store(phase + 1, std::memory_order_release);
    return;
  }
  int spins = 0;
  while (barrier_phase_.load(std::memory_order_acquire) == phase) {
    if (++spins < spins_before_yield) INFLIGHT_CPU_RELAX(); else std::this_thread::yield();
  }
}

thread_pool::range thread_pool::split(int64_t count, int thread_index) const {
  const int64_t per_thread = count / num_threads_;
  const int64_t remainder = count % num_threads_;
  const int64_t begin = thread_index * per_thread + std::min<int64_t>(thread_index, remainder);
  return {begin, begin + per_thread + (thread_index < remainder ? 1 : 0)};
}

}  // namespace inflight
