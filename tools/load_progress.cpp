#include "load_progress.hpp"

#include <unistd.h>

#include <filesystem>
#include <system_error>

namespace inflight::cli {

namespace {

double megabytes(int64_t bytes) { return double(bytes) / (1 << 20); }

}  // namespace

load_progress::load_progress(std::string program, int64_t file_bytes, bool terminal, std::FILE* out)
    : program_(std::move(program)), file_bytes_(file_bytes), terminal_(terminal), out_(out) {}

void load_progress::on_layer(int done, int total, void* context) {
  auto& self = *static_cast<load_progress*>(context);
  if (!self.terminal_ || total <= 0) return;
  constexpr int width = 30;
  const int filled = done * width / total;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - self.started_).count();
  const double loaded = megabytes(self.file_bytes_) * done / total;
  std::fprintf(self.out_, "\r%s: loading [%.*s%*s] %3d%% %.0f/%.0f MB %.0f MB/s", self.program_.c_str(), filled,
               "##############################", width - filled, "", done * 100 / total, loaded,
               megabytes(self.file_bytes_), seconds > 0 ? loaded / seconds : 0.0);
  std::fflush(self.out_);
  self.drew_ = true;
}

void load_progress::finish() {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  if (drew_) std::fputs("\r\033[K", out_);  // the bar goes; the line below stays
  std::fprintf(out_, "%s: loaded %.0f MB of weights in %.2f s (%.0f MB/s)\n", program_.c_str(), megabytes(file_bytes_),
               seconds, seconds > 0 ? megabytes(file_bytes_) / seconds : 0.0);
  std::fflush(out_);
}

std::unique_ptr<backend> load_backend(const std::string& program, std::shared_ptr<const gguf::gguf_file> file,
                                      const std::string& path, backend_choice choice) {
  std::error_code error;
  const auto bytes = std::filesystem::file_size(path, error);
  load_progress progress(program, error ? 0 : int64_t(bytes), isatty(STDERR_FILENO) != 0);
  choice.on_load_progress = &load_progress::on_layer;
  choice.load_progress_context = &progress;
  auto model = make_backend(std::move(file), choice);
  progress.finish();
  return model;
}

}  // namespace inflight::cli
