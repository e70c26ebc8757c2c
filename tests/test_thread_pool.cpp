// The thread team behind the CPU forward pass: every member runs, barriers order phases, and a pool
// used the moment it is built never loses its first task (a race that once hung the suite).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "thread_pool.hpp"

using inflight::thread_pool;

TEST_CASE("a pool runs its first task at once after construction") {
  // Workers that read the generation counter only after starting could miss a run() issued before
  // they were scheduled; that run's barrier then never completed. ctest's timeout turns a hang into a failure.
  for (int iteration = 0; iteration < 3000; ++iteration) {
    thread_pool pool(2);
    std::atomic<int> ran{0};
    auto task = [&](int) {
      ran.fetch_add(1);
      pool.barrier();
    };
    pool.run(task);
    REQUIRE(ran.load() == 2);
  }
}

TEST_CASE("barriers separate phases on every member") {
  thread_pool pool(3);
  std::vector<int> first(3, 0), second(3, 0);
  for (int round = 1; round <= 200; ++round) {
    auto task = [&](int thread) {
      first[size_t(thread)] = round;
      pool.barrier();
      // After the barrier every member's first-phase write is visible.
      int sum = 0;
      for (int value : first) sum += value;
      second[size_t(thread)] = sum;
      pool.barrier();
    };
    pool.run(task);
    for (int value : second) REQUIRE(value == 3 * round);
  }
}

TEST_CASE("no barrier loses its wake-up, with members that fall asleep at every phase") {
  // 50 000 barriers where one member or the other arrives late by up to 40 us, so that the early one goes
  // through its spin, its yields and into the futex wait at nearly every barrier: the path a lost wake-up
  // would hang (thread_pool.cpp says why every waking store is seq_cst). A watchdog turns a hang into a
  // failure with a message instead of ctest's timeout.
  thread_pool pool(2);
  std::atomic<int64_t> barriers_passed{0};
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    int64_t last = -1;
    while (!finished.load()) {
      for (int i = 0; i < 100 && !finished.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const int64_t now = barriers_passed.load();
      if (!finished.load() && now == last) {
        std::fprintf(stderr, "thread_pool: no barrier passed in 10 s after %lld: a lost wake-up\n", (long long)now);
        std::abort();
      }
      last = now;
    }
  });
  constexpr int runs = 1000, barriers_per_run = 50;
  for (int run = 0; run < runs; ++run) {
    auto task = [&](int thread) {
      for (int b = 0; b < barriers_per_run; ++b) {
        // One member or the other arrives late, by a few to tens of microseconds: the early one sleeps.
        if (((b + run) & 1) == thread) std::this_thread::sleep_for(std::chrono::microseconds((b * 7 + run) % 40));
        pool.barrier();
        if (thread == 0) barriers_passed.fetch_add(1, std::memory_order_relaxed);
      }
    };
    pool.run(task);
  }
  finished.store(true);
  watchdog.join();
  CHECK(barriers_passed.load() == int64_t(runs) * barriers_per_run);
}

TEST_CASE("split covers every item exactly once") {
  thread_pool pool(3);
  for (int64_t count : {0, 1, 2, 3, 7, 100}) {
    int64_t next = 0;
    for (int thread = 0; thread < pool.size(); ++thread) {
      const auto range = pool.split(count, thread);
      CHECK(range.begin == next);
      CHECK(range.end >= range.begin);
      next = range.end;
    }
    CHECK(next == count);
  }
}
