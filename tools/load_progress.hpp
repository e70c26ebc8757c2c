// Progress of a model load, for the person watching: on a terminal a bar redrawn per layer with the
// percentage, the megabytes and MB/s; elsewhere (a log, a pipe) nothing until one plain line at the end.
// The bytes are the model file's (the weights are nearly all of it), shared out over the layers.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "backend_choice.hpp"

namespace inflight::cli {

class load_progress {
 public:
  // `program` prefixes the lines ("inflight serve"); `terminal`: draw the bar (else the one line only).
  load_progress(std::string program, int64_t file_bytes, bool terminal, std::FILE* out = stderr);
  // backend_choice::on_load_progress: `context` is the load_progress.
  static void on_layer(int done, int total, void* context);
  // The end: clears the bar and writes "PROGRAM: loaded N MB in S s (R MB/s)".
  void finish();

 private:
  std::string program_;
  int64_t file_bytes_;
  bool terminal_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  bool drew_ = false;
};

// make_backend with the progress above: the bar when stderr is a terminal, the line either way.
std::unique_ptr<backend> load_backend(const std::string& program, std::shared_ptr<const gguf::gguf_file> file,
                                      const std::string& path, backend_choice choice);

}  // namespace inflight::cli
