// Fuzz target: a model file is untrusted input too. The bytes become a file (memfd), which the GGUF reader
// maps and parses; what parses is then read as the loaders read it (model config, tokenizer, chat
// template) and every tensor's first and last byte is touched, so that a tensor the reader accepted but
// that lies outside the mapping crashes here. Every failure must be a gguf_error or another
// std::exception with a message, never a crash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "inflight/chat_template.hpp"
#include "inflight/gguf.hpp"
#include "inflight/model_config.hpp"
#include "inflight/tokenizer.hpp"

using namespace inflight;

namespace {

int memory_file() {
  static const int fd = memfd_create("fuzz.gguf", 0);
  if (fd < 0) std::abort();
  return fd;
}

void read_as_loaders_do(const gguf::gguf_file& file) {
  volatile uint8_t sink = 0;
  for (const gguf::tensor_info& tensor : file.tensors()) {
    if (tensor.num_bytes == 0) continue;
    sink = sink + tensor.data[0] + tensor.data[tensor.num_bytes - 1];
  }
  try {
    (void)model_config::from_gguf(file);
  } catch (const std::exception&) {
  }
  try {
    const auto tok = tokenizer::from_gguf(file);
    (void)tok->encode("Hello, world! <|im_start|>", true);
  } catch (const std::exception&) {
  }
  try {
    (void)chat_template::from_gguf(file);
  } catch (const std::exception&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memory_file();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != ssize_t(size)) std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  std::shared_ptr<const gguf::gguf_file> file;
  try {
    file = gguf::gguf_file::open(path);
  } catch (const gguf::gguf_error& error) {
    if (std::string(error.what()).empty()) std::abort();
    return 0;
  }
  read_as_loaders_do(*file);
  return 0;
}
