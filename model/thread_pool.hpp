// A fixed team of threads that runs one function on every member, ggml-style: a forward step is ONE
// parallel region in which each thread walks the whole layer sequence, taking its static share of each
// op and meeting the others at a barrier between dependent ops. One wake-up per step instead of one per
// op matters: a SmolLM2 decode step has ~300 ops and takes a few milliseconds.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace inflight {

class thread_pool {
 public:
  // num_threads counts the calling thread; 0 means one per CPU this process may use.
  explicit thread_pool(int num_threads = 0);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return num_threads_; }

  // Runs fn(thread_index) on every member (the caller is member 0); returns when all have finished.
  // fn must not throw (a throw terminates the process: see invoke).
  template <class Fn>
  void run(Fn& fn) {
    run_erased(&fn, [](void* context, int thread_index) { (*static_cast<Fn*>(context))(thread_index); });
  }

  // Called by every member inside run(): returns once all members have arrived.
  void barrier();

  // [begin, end) of `count` items that member `thread_index` owns under an even static split.
  struct range { int64_t begin, end; };
  range split(int64_t count, int thread_index) const;

 private:
  using task_fn = void (*)(void*, int);
  void run_erased(void* context, task_fn task);
  static void invoke(task_fn task, void* context, int thread_index) noexcept;
  void stop_workers();
  void worker_loop(int thread_index, uint64_t seen_generation);

  int num_threads_;
  std::vector<std::thread> workers_;
  // A new generation number publishes a task; workers spin briefly, then sleep on it (futex).
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> running_{0};
  std::atomic<bool> stopping_{false};
  void* task_context_ = nullptr;
  task_fn task_ = nullptr;
  // Sense-reversing barrier.
  alignas(64) std::atomic<int> barrier_count_{0};
  alignas(64) std::atomic<uint32_t> barrier_phase_{0};
};

}  // namespace inflight
