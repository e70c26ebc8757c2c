// Progress of a benchmark sweep for the person waiting on it: one line on stderr per finished point, with
// the time so far and an estimate of the time left. The estimate weighs each point by the work it is
// expected to be (given up front: tokens to compute, seconds of arrivals, ...), so a sweep whose last
// points are the longest does not promise an early end. stdout keeps only the results.
#pragma once

#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

namespace inflight::cli {

class sweep_progress {
 public:
  sweep_progress(std::string program, std::vector<double> work) : program_(std::move(program)), work_(std::move(work)) {}

  void point_done(size_t index, const std::string& what) {
    done_work_ += work_[index];
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    const double total_work = std::accumulate(work_.begin(), work_.end(), 0.0);
    const double left = done_work_ > 0 ? elapsed * (total_work - done_work_) / done_work_ : 0;
    std::fprintf(stderr, "%s: [%zu/%zu] %s; %.0f s so far", program_.c_str(), index + 1, work_.size(), what.c_str(),
                 elapsed);
    if (index + 1 < work_.size()) std::fprintf(stderr, ", about %.0f s left", left);
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  std::string program_;
  std::vector<double> work_;
  double done_work_ = 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace inflight::cli
