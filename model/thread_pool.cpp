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

// Every wait spins briefly (a step's ops follow each other within microseconds), then sleeps on a futex
// (std::atomic::wait). Sleeping matters when the machine is oversubscribed — two test binaries under
// `ctest -j 2`, or a benchmark next to a build: a pure spin then burns the very core the member being
// waited for needs, and throughput collapses several-fold.
constexpr int spins_before_sleep = 4000;

template <class T, class Done>
void spin_then_wait(const std::atomic<T>& value, Done done) {
  for (int spins = 0; spins < spins_before_sleep; ++spins) {
    if (done(value.load(std::memory_order_acquire))) return;
    INFLIGHT_CPU_RELAX();
  }
  for (T seen = value.load(std::memory_order_acquire); !done(seen); seen = value.load(std::memory_order_acquire)) {
    value.wait(seen, std::memory_order_acquire);
  }
}

}  // namespace

thread_pool::thread_pool(int num_threads) {
  if (num_threads <= 0) num_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  workers_.reserve(size_t(num_threads_ - 1));
  // Each worker starts from the generation current *now*: were it to read generation_ once its thread
  // is running, a run() issued in between would be missed and that run's first barrier would wait
  // forever (seen under load).
  const uint64_t initial_generation = generation_.load(std::memory_order_relaxed);
  for (int index = 1; index < num_threads_; ++index) {
    workers_.emplace_back([this, index, initial_generation] { worker_loop(index, initial_generation); });
  }
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
  spin_then_wait(running_, [](int running) { return running == 0; });
}

void thread_pool::worker_loop(int thread_index, uint64_t seen) {
  for (;;) {
    // Decode steps follow each other closely: spin a while for the next one, then sleep.
    spin_then_wait(generation_, [seen](uint64_t generation) { return generation != seen; });
    seen = generation_.load(std::memory_order_acquire);
    if (stopping_.load(std::memory_order_acquire)) return;
    task_(task_context_, thread_index);
    if (running_.fetch_sub(1, std::memory_order_acq_rel) == 1) running_.notify_all();
  }
}

void thread_pool::barrier() {
  if (num_threads_ == 1) return;
  const uint32_t phase = barrier_phase_.load(std::memory_order_acquire);
  if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == num_threads_ - 1) {
    barrier_count_.store(0, std::memory_order_relaxed);
    barrier_phase_.store(phase + 1, std::memory_order_release);
    barrier_phase_.notify_all();  // a futex wake only when someone sleeps (libstdc++ counts waiters)
    return;
  }
  spin_then_wait(barrier_phase_, [phase](uint32_t current) { return current != phase; });
}

thread_pool::range thread_pool::split(int64_t count, int thread_index) const {
  const int64_t per_thread = count / num_threads_;
  const int64_t remainder = count % num_threads_;
  const int64_t begin = thread_index * per_thread + std::min<int64_t>(thread_index, remainder);
  return {begin, begin + per_thread + (thread_index < remainder ? 1 : 0)};
}

}  // namespace inflight
