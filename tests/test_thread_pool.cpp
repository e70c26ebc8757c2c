// The thread team behind the CPU forward pass: every member runs, barriers order phases, and a pool
// used the moment it is built never loses its first task (a race that once hung the suite).
#include <doctest/doctest.h>

#include <atomic>
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
