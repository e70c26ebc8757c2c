// The default model's tokenizer and chat template, loaded once per fuzzing process ($INFLIGHT_FUZZ_MODEL
// overrides the path the build knows).
#pragma once

#include <cstdlib>
#include <memory>

#include "inflight/chat_template.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::fuzz {

inline const gguf::gguf_file& default_model_file() {
  static const std::shared_ptr<const gguf::gguf_file> file = [] {
    const char* path = std::getenv("INFLIGHT_FUZZ_MODEL");
    return gguf::gguf_file::open(path ? path : INFLIGHT_DEFAULT_MODEL);
  }();
  return *file;
}

inline const std::shared_ptr<const tokenizer>& default_tokenizer() {
  static const std::shared_ptr<const tokenizer> tok = tokenizer::from_gguf(default_model_file());
  return tok;
}

}  // namespace inflight::fuzz
