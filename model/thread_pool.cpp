#include "thread_pool.hpp"

#include <sched.h>

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define INFLIGHT_CPU_RELAX() _mm_pause()
#else
#define INFLIGHT_CPU_RELAX() std::this_thread::yield()
#endif

namespace inflight {

namespace {

// Every wait spins briefly (a step's ops follow each other within microseconds), then yields the core a
// few times, then sleeps on a futex (std::atomic::wait). The short spin and the yields matter when the
// machine is oversubscribed — two test binaries under `ctest -j 2`, a benchmark next to a build: a long
// spin burns the very core the member being waited for needs (measured: 4000 pauses made 2-thread decode
// 7x slower under load), while sched_yield returns at once when nobody else wants the core.
constexpr int spins_before_yield = 128;
constexpr int yields_before_sleep = 64;

// Lost wake-ups: a waker stores the new value and then asks whether anyone sleeps (libstdc++'s
// notify reads its waiter count with a seq_cst load); a sleeper registers (a seq_cst add) and then reads
// the value. Both sides must be seq_cst for one of them to see the other: with a release store, the
// C++ model (and x86's store buffer) lets the waker's check pass its store, so both could miss each other
// and the sleeper would wait forever. Every store that may wake someone below is seq_cst, and so are the
// loads here.
template <class T, class Done>
void spin_then_wait(const std::atomic<T>& value, Done done) {
  for (int spins = 0; spins < spins_before_yield; ++spins) {
    if (done(value.load(std::memory_order_acquire))) return;
    INFLIGHT_CPU_RELAX();
  }
  for (int yields = 0; yields < yields_before_sleep; ++yields) {
    if (done(value.load(std::memory_order_acquire))) return;
    std::this_thread::yield();
  }
  for (T seen = value.load(std::memory_order_seq_cst); !done(seen); seen = value.load(std::memory_order_seq_cst)) {
    value.wait(seen, std::memory_order_seq_cst);
  }
}

// The CPUs this process may run on (taskset, cgroup cpusets), which hardware_concurrency() ignores.
int usable_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

// Tasks must not throw: the other members would wait at the next barrier forever. Calling through a
// noexcept function turns a violation into an immediate std::terminate instead of a silent hang.
void thread_pool::invoke(task_fn task, void* context, int thread_index) noexcept { task(context, thread_index); }

namespace {

}  // namespace

thread_pool::thread_pool(int num_threads) {
  if (num_threads <= 0) num_threads = usable_cpus();
  num_threads_ = num_threads;
  workers_.reserve(size_t(num_threads_ - 1));
  // Each worker starts from the generation current *now*: were it to read generation_ once its thread
  // is running, a run() issued in between would be missed and that run's first barrier would wait
  // forever (seen under load).
  const uint64_t initial_generation = generation_.load(std::memory_order_relaxed);
  try {
    for (int index = 1; index < num_threads_; ++index) {
      workers_.emplace_back([this, index, initial_generation] { worker_loop(index, initial_generation); });
    }
  } catch (...) {  // e.g. a thread limit: stop the members already started before reporting
    stop_workers();
    throw;
  }
}

void thread_pool::stop_workers() {
  stopping_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

thread_pool::~thread_pool() { stop_workers(); }

void thread_pool::run_erased(void* context, task_fn task) {
  if (num_threads_ == 1) {
    invoke(task, context, 0);
    return;
  }
  task_context_ = context;
  task_ = task;
  running_.store(num_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all();
  invoke(task, context, 0);
  spin_then_wait(running_, [](int running) { return running == 0; });
}

void thread_pool::worker_loop(int thread_index, uint64_t seen) {
  for (;;) {
    // Decode steps follow each other closely: spin a while for the next one, then sleep.
    spin_then_wait(generation_, [seen](uint64_t generation) { return generation != seen; });
    seen = generation_.load(std::memory_order_acquire);
    if (stopping_.load(std::memory_order_acquire)) return;
    invoke(task_, task_context_, thread_index);
    if (running_.fetch_sub(1, std::memory_order_seq_cst) == 1) running_.notify_all();
  }
}

void thread_pool::barrier() {
  if (num_threads_ == 1) return;
  const uint32_t phase = barrier_phase_.load(std::memory_order_acquire);
  if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == num_threads_ - 1) {
    barrier_count_.store(0, std::memory_order_relaxed);
    barrier_phase_.store(phase + 1, std::memory_order_seq_cst);
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
