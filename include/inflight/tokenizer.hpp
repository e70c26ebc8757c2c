// Byte-level BPE tokenizer built from GGUF metadata (tokenizer.ggml.*), matching llama.cpp's ids.
//
// encode(): special tokens are cut out of the text first (longest text first, as llama.cpp does), each
// remaining fragment is pre-tokenized (model/pre_tokenizer.hpp), every piece's bytes are mapped through
// GPT-2's bytes_to_unicode table and merged by rank (lowest first, leftmost on ties). Malformed UTF-8 is
// handled like llama.cpp: each bad byte becomes U+FFFD before pre-tokenization.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace inflight {
namespace gguf { class gguf_file; }

class pre_tokenizer;

enum class token_kind : uint8_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

// Everything a tokenizer is built from; from_gguf fills it from tokenizer.ggml.*, tests build small ones.
struct tokenizer_config {
  std::string pre = "default";         // tokenizer.ggml.pre
  std::vector<std::string> tokens;     // GPT-2-mapped token texts, index = id
  std::vector<token_kind> kinds;       // empty = all normal
  std::vector<std::string> merges;     // "left right", rank = index
  int32_t bos_id = -1, eos_id = -1, eot_id = -1, eom_id = -1;
  std::optional<bool> add_bos, add_eos;  // absent: the pre-tokenizer family's default (llama3: BOS on)
};

class tokenizer {
 public:
  // Throws gguf::gguf_error when the metadata is missing or names an unsupported model/pre-tokenizer.
  static std::shared_ptr<const tokenizer> from_gguf(const gguf::gguf_file& file);
  // The config from_gguf builds from; edit it (e.g. override `pre`) and pass it to from_config.
  static tokenizer_config config_from_gguf(const gguf::gguf_file& file);
  // Throws std::invalid_argument for an unsupported pre-tokenizer or inconsistent sizes.
  static std::shared_ptr<const tokenizer> from_config(tokenizer_config config);
  ~tokenizer();

  // Text -> ids. `parse_special`: cut control tokens out of the text whole (for templates the server
  // renders); false for untrusted user text. User-defined tokens are cut out either way, as in llama.cpp.
  // BOS/EOS are added as the metadata says.
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
  int32_t eot_id() const { return eot_id_; }  // -1 when the vocabulary has none
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  // True for every token that ends generation (eos, eot, <|im_end|>/<|endoftext|> style ends).
  bool is_end_of_generation(int32_t id) const;
  const std::vector<int32_t>& end_of_generation_ids() const { return end_of_generation_ids_; }
  const std::string& pre_tokenizer_name() const { return pre_name_; }

  // Precomputed token_to_bytes(id, false) without a copy (the streaming detokenizer's hot path).
  // Throws std::out_of_range for a bad id.
  const std::string& token_bytes(int32_t id) const { return token_bytes_.at(size_t(id)); }
  // What skip_special drops: control, unknown and unused tokens (user-defined tokens are text).
  bool is_special(int32_t id) const;
  // The id of the token whose (GPT-2-mapped) text is exactly `text`.
  std::optional<int32_t> find_token(std::string_view text) const;

 private:
  struct merge_entry {
    int32_t rank;
    int32_t result;  // id of left+right, -1 if the vocabulary lacks it
  };

  tokenizer();
  void encode_fragment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::string pre_name_;
  std::vector<std::string> tokens_;
  std::vector<token_kind> kinds_;
  std::vector<std::string> token_bytes_;                   // decoded bytes (special: their text)
  std::unordered_map<std::string, int32_t> token_ids_;
  std::unordered_map<uint64_t, merge_entry> merges_;      // (left id << 32 | right id) -> merge
  std::array<int32_t, 256> byte_token_ids_{};              // token of each single byte's GPT-2 char
  std::vector<int32_t> special_ids_;                       // control, unknown, user-defined; longest text first
  std::vector<int32_t> end_of_generation_ids_;
  std::unique_ptr<pre_tokenizer> pre_;
  int32_t bos_id_ = -1, eos_id_ = -1, eot_id_ = -1, eom_id_ = -1;
  bool add_bos_ = false, add_eos_ = false;
  friend class tokenizer_builder;
};

}  // namespace inflight
