// Byte-level BPE tokenizer built from GGUF metadata (tokenizer.ggml.*), matching llama.cpp's ids.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace inflight {
namespace gguf { class gguf_file; }

class pre_tokenizer;

enum class token_kind : uint8_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

class tokenizer {
 public:
  // Throws gguf::gguf_error when the metadata is missing or names an unsupported model/pre-tokenizer.
  static std::shared_ptr<const tokenizer> from_gguf(const gguf::gguf_file& file);
  ~tokenizer();

  // Text -> ids. `parse_special`: cut control/user-defined tokens out of the text whole (for templates
  // the server renders); false for untrusted user text. BOS/EOS are added as the metadata says.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // The raw bytes of one token (GPT-2 byte mapping undone). Special tokens render as their text
  // unless `skip_special`.
  std::string token_to_bytes(int32_t id, bool skip_special = false) const;
  // Concatenation of token_to_bytes (may end inside a UTF-8 character).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  int32_t vocab_size() const { return int32_t(tokens_.size()); }
  const std::string& token_text(int32_t id) const { return tokens_.at(size_t(id)); }
  token_kind kind(int32_t id) const { return kinds_.at(size_t(id)); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  // True for every token that ends generation (eos, eot, <|im_end|>/<|endoftext|> style ends).
  bool is_end_of_generation(int32_t id) const;
  const std::string& pre_tokenizer_name() const { return pre_name_; }

 private:
  tokenizer();
  std::string pre_name_;
  std::vector<std::string> tokens_;
  std::vector<token_kind> kinds_;
  std::unordered_map<std::string, int32_t> token_ids_;
  std::unordered_map<std::string, int32_t> merge_ranks_;   // "left right" -> rank
  std::vector<int32_t> special_ids_;                       // control + user-defined, longest text first
  std::vector<int32_t> end_of_generation_ids_;
  std::unique_ptr<pre_tokenizer> pre_;
  int32_t bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = false, add_eos_ = false;
  friend class tokenizer_builder;
};

}  // namespace inflight
