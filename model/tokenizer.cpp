#include "inflight/tokenizer.hpp"

#include <algorithm>
#include <queue>
#include <stdexcept>

#include "inflight/gguf.hpp"
#include "pre_tokenizer.hpp"
#include "unicode_text.hpp"

namespace inflight {
namespace {

uint64_t merge_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

// Token texts llama.cpp (llama-vocab.cpp, load) treats as end of generation whatever their declared
// type, forcing them to control. Its FIM pad/repo/file-separator tokens end generation too.
constexpr std::string_view end_of_generation_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
    "_<EOT>", "<|end_of_text|>", "<end_of_utterance>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
};
// Control-looking FIM tokens llama.cpp also forces to control (so they are parsed as specials).
constexpr std::string_view forced_control_texts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "<|fim_suffix|>", "<fim-suffix>",
    "<fim_suffix>", "<SUF>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",
};

// Undoes GPT-2's byte mapping; a code point outside the table (only in hand-made vocabularies) is kept
// as its UTF-8 bytes.
std::string decode_gpt2_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto d = unicode::decode_utf8(text, i);
    const int byte = d.valid ? unicode::unicode_to_byte(d.cpt) : -1;
    if (byte >= 0) out.push_back(char(byte));
    else out.append(text.substr(i, d.length));
    i += d.length;
  }
  return out;
}

// "<0x0A>" -> 0x0A (SentencePiece-style byte tokens), else -1.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    value *= 16;
    if (c >= '0' && c <= '9') value += c - '0';
    else if (c >= 'A' && c <= 'F') value += c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') value += c - 'a' + 10;
    else return -1;
  }
  return value;
}

}  // namespace

class tokenizer_builder {
 public:
  static std::shared_ptr<const tokenizer> build(tokenizer_config config) {
    std::shared_ptr<tokenizer> tok(new tokenizer());
    const size_t n = config.tokens.size();
    if (n == 0) throw std::invalid_argument("tokenizer: empty vocabulary");
    if (!config.kinds.empty() && config.kinds.size() != n) {
      throw std::invalid_argument("tokenizer: " + std::to_string(config.kinds.size()) + " token types for " +
                                  std::to_string(n) + " tokens");
    }
    tok->pre_ = pre_tokenizer::create(config.pre);
    tok->pre_name_ = config.pre;
    tok->tokens_ = std::move(config.tokens);
    tok->kinds_ = config.kinds.empty() ? std::vector<token_kind>(n, token_kind::normal) : std::move(config.kinds);

    tok->token_ids_.reserve(n);
    for (size_t id = 0; id < n; ++id) tok->token_ids_.try_emplace(tok->tokens_[id], int32_t(id));

    for (auto text : end_of_generation_texts) {
      if (auto id = tok->find_token(text)) {
        tok->kinds_[size_t(*id)] = token_kind::control;
        tok->end_of_generation_ids_.push_back(*id);
      }
    }
    for (auto text : forced_control_texts) {
      if (auto id = tok->find_token(text)) tok->kinds_[size_t(*id)] = token_kind::control;
    }
    auto valid_id = [n](int32_t id) { return id >= 0 && size_t(id) < n ? id : -1; };
    tok->bos_id_ = valid_id(config.bos_id);
    tok->eos_id_ = valid_id(config.eos_id);
    tok->eot_id_ = valid_id(config.eot_id);
    tok->eom_id_ = valid_id(config.eom_id);
    if (tok->eot_id_ < 0) {  // llama.cpp guesses the end-of-turn token from its text
      for (auto text : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"}) {
        if (auto id = tok->find_token(text)) { tok->eot_id_ = *id; break; }
      }
    }
    for (int32_t id : {tok->eos_id_, tok->eot_id_, tok->eom_id_}) {
      auto& eog = tok->end_of_generation_ids_;
      if (id >= 0 && std::find(eog.begin(), eog.end(), id) == eog.end()) eog.push_back(id);
    }
    std::sort(tok->end_of_generation_ids_.begin(), tok->end_of_generation_ids_.end());

    tok->add_bos_ = config.add_bos.value_or(tok->pre_->ignore_merges());  // llama3 family: BOS by default
    tok->add_eos_ = config.add_eos.value_or(false);
    if (tok->add_bos_ && tok->bos_id_ < 0) throw std::invalid_argument("tokenizer: add_bos set but no BOS token");
    if (tok->add_eos_ && tok->eos_id_ < 0) throw std::invalid_argument("tokenizer: add_eos set but no EOS token");

    for (int b = 0; b < 256; ++b) {
      auto id = tok->find_token(unicode::byte_to_unicode_utf8(uint8_t(b)));
      tok->byte_token_ids_[size_t(b)] = id ? *id : -1;
    }

    tok->merges_.reserve(config.merges.size());
    for (size_t rank = 0; rank < config.merges.size(); ++rank) {
      const std::string& merge = config.merges[rank];
      const size_t space = merge.find(' ', 1);  // from 1, as llama.cpp: a part may not be empty
      if (space == std::string::npos) continue;
      const auto left = tok->find_token(std::string_view(merge).substr(0, space));
      const auto right = tok->find_token(std::string_view(merge).substr(space + 1));
      if (!left || !right) continue;  // can never apply: BPE symbols are always vocabulary entries
      const auto result = tok->find_token(merge.substr(0, space) + merge.substr(space + 1));
      tok->merges_.try_emplace(merge_key(*left, *right), tokenizer::merge_entry{int32_t(rank), result ? *result : -1});
    }

    tok->token_bytes_.resize(n);
    for (size_t id = 0; id < n; ++id) {
      const std::string& text = tok->tokens_[id];
      switch (tok->kinds_[id]) {
        case token_kind::normal: tok->token_bytes_[id] = decode_gpt2_text(text); break;
        case token_kind::byte: {
          const int byte = parse_byte_token(text);
          tok->token_bytes_[id] = byte >= 0 ? std::string(1, char(byte)) : decode_gpt2_text(text);
          break;
        }
        default: tok->token_bytes_[id] = text; break;  // specials are stored verbatim
      }
      const auto kind = tok->kinds_[id];
      if ((kind == token_kind::control || kind == token_kind::unknown || kind == token_kind::user_defined) &&
          !text.empty()) {
        tok->special_ids_.push_back(int32_t(id));
      }
    }
    // Longest text first; stable on id so equal lengths are deterministic (llama.cpp's std::sort is not).
    std::stable_sort(tok->special_ids_.begin(), tok->special_ids_.end(), [&](int32_t a, int32_t b) {
      return tok->tokens_[size_t(a)].size() > tok->tokens_[size_t(b)].size();
    });
    return tok;
  }
};

tokenizer::tokenizer() = default;
tokenizer::~tokenizer() = default;

std::shared_ptr<const tokenizer> tokenizer::from_config(tokenizer_config config) {
  return tokenizer_builder::build(std::move(config));
}

std::shared_ptr<const tokenizer> tokenizer::from_gguf(const gguf::gguf_file& file) {
  try {
    return tokenizer_builder::build(config_from_gguf(file));
  } catch (const std::invalid_argument& e) {
    throw gguf::gguf_error(file.path() + ": " + e.what());
  }
}

tokenizer_config tokenizer::config_from_gguf(const gguf::gguf_file& file) {
  const std::string where = file.path() + ": ";
  const auto model = file.find_string("tokenizer.ggml.model");
  if (!model) throw gguf::gguf_error(where + "missing required key 'tokenizer.ggml.model'");
  if (*model != "gpt2") {
    throw gguf::gguf_error(where + "unsupported tokenizer model '" + *model +
                           "' (tokenizer.ggml.model); only byte-level BPE 'gpt2' is implemented");
  }
  tokenizer_config config;
  // llama.cpp falls back to its default regexes when the key is absent (old conversions).
  config.pre = file.find_string("tokenizer.ggml.pre").value_or("default");
  config.tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (file.find("tokenizer.ggml.token_type")) {
    for (int64_t type : file.get_int_array("tokenizer.ggml.token_type")) {
      // 0 (undefined) and unknown values count as normal text.
      config.kinds.push_back(type >= 1 && type <= 6 ? token_kind(type) : token_kind::normal);
    }
  }
  if (file.find("tokenizer.ggml.merges")) config.merges = file.get_string_array("tokenizer.ggml.merges");
  auto id_key = [&](const char* key) {
    const auto v = file.find_uint(key);
    return v && *v < config.tokens.size() ? int32_t(*v) : -1;
  };
  config.bos_id = id_key("tokenizer.ggml.bos_token_id");
  config.eos_id = id_key("tokenizer.ggml.eos_token_id");
  config.eot_id = id_key("tokenizer.ggml.eot_token_id");
  config.eom_id = id_key("tokenizer.ggml.eom_token_id");
  config.add_bos = file.find_bool("tokenizer.ggml.add_bos_token");
  config.add_eos = file.find_bool("tokenizer.ggml.add_eos_token");
  return config;
}

bool tokenizer::is_end_of_generation(int32_t id) const {
  return std::binary_search(end_of_generation_ids_.begin(), end_of_generation_ids_.end(), id);
}

bool tokenizer::is_special(int32_t id) const {
  const auto k = kind(id);
  return k == token_kind::control || k == token_kind::unknown || k == token_kind::unused;
}

std::optional<int32_t> tokenizer::find_token(std::string_view text) const {
  const auto it = token_ids_.find(std::string(text));
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

std::string tokenizer::token_to_bytes(int32_t id, bool skip_special) const {
  if (skip_special && is_special(id)) return {};
  return token_bytes(id);
}

std::string tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    out += token_bytes(id);
  }
  return out;
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_bos_) out.push_back(bos_id_);

  // Fragments are either raw text [begin, end) or a special token (id >= 0). As in llama.cpp's
  // tokenizer_st_partition, each special token (longest first) is cut out of every raw fragment left by
  // the previous ones, so a longer token wins over a shorter one it contains wherever it occurs.
  struct fragment {
    int32_t id;
    size_t begin, end;
  };
  std::vector<fragment> fragments{{-1, 0, text.size()}}, next;
  if (!text.empty()) {
    for (int32_t special : special_ids_) {
      if (!parse_special && kind(special) != token_kind::user_defined) continue;
      const std::string& needle = tokens_[size_t(special)];
      if (text.find(needle) == std::string_view::npos) continue;
      next.clear();
      for (const fragment& f : fragments) {
        if (f.id >= 0) {
          next.push_back(f);
          continue;
        }
        size_t begin = f.begin;
        const std::string_view window = text.substr(0, f.end);
        for (size_t at = window.find(needle, begin); at != std::string_view::npos; at = window.find(needle, begin)) {
          if (at > begin) next.push_back({-1, begin, at});
          next.push_back({special, at, at + needle.size()});
          begin = at + needle.size();
        }
        if (begin < f.end) next.push_back({-1, begin, f.end});
      }
      fragments.swap(next);
    }
  }

  for (const fragment& f : fragments) {
    if (f.id >= 0) out.push_back(f.id);
    else if (f.end > f.begin) encode_fragment(text.substr(f.begin, f.end - f.begin), out);
  }
  if (add_eos_) out.push_back(eos_id_);
  return out;
}

void tokenizer::encode_fragment(std::string_view text, std::vector<int32_t>& out) const {
  // Valid UTF-8 passes through llama.cpp's lenient decoder unchanged; only malformed text is rewritten.
  std::string sanitized;
  if (!unicode::is_valid_utf8(text)) {
    sanitized = unicode::llama_sanitize_utf8(text);
    text = sanitized;
  }
  std::vector<std::string_view> pieces;
  pre_->split(text, pieces);
  for (auto piece : pieces) encode_piece(piece, out);
}

void tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (pre_->ignore_merges()) {
    std::string mapped;
    for (char c : piece) mapped += unicode::byte_to_unicode_utf8(uint8_t(c));
    if (const auto it = token_ids_.find(mapped); it != token_ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }

  // One symbol per byte (a byte's GPT-2 character), doubly linked so merged-away symbols drop out.
  struct symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t begin, length;  // bytes of `piece`; length 0 = merged into its left neighbour
  };
  std::vector<symbol> symbols(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    symbols[i] = {byte_token_ids_[uint8_t(piece[i])], int32_t(i) - 1,
                  i + 1 < piece.size() ? int32_t(i + 1) : -1, uint32_t(i), 1};
  }

  // Candidate merges of adjacent symbols; the best is the lowest rank, then the leftmost (llama.cpp's
  // llm_bigram_bpe order). Entries go stale when a neighbour changes: they remember both ids and are
  // dropped on pop if those no longer hold. Each merge pushes at most two entries: O(n log n).
  struct candidate {
    int32_t rank;
    int32_t left, right;
    int32_t left_id, right_id;
  };
  auto worse = [](const candidate& a, const candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::priority_queue<candidate, std::vector<candidate>, decltype(worse)> queue(worse);
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t left_id = symbols[size_t(left)].id, right_id = symbols[size_t(right)].id;
    if (left_id < 0 || right_id < 0) return;
    const auto it = merges_.find(merge_key(left_id, right_id));
    if (it != merges_.end()) queue.push({it->second.rank, left, right, left_id, right_id});
  };
  for (int32_t i = 0; i + 1 < int32_t(symbols.size()); ++i) consider(i, i + 1);

  while (!queue.empty()) {
    const candidate c = queue.top();
    queue.pop();
    symbol& left = symbols[size_t(c.left)];
    symbol& right = symbols[size_t(c.right)];
    if (left.length == 0 || right.length == 0 || left.next != c.right || left.id != c.left_id ||
        right.id != c.right_id) {
      continue;
    }
    left.id = merges_.at(merge_key(c.left_id, c.right_id)).result;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[size_t(right.next)].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }

  for (int32_t i = piece.empty() ? -1 : 0; i >= 0; i = symbols[size_t(i)].next) {
    const symbol& s = symbols[size_t(i)];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // Not in the vocabulary: one token per byte; bytes without a token are dropped (as in llama.cpp).
    for (uint32_t k = s.begin; k < s.begin + s.length; ++k) {
      if (const int32_t id = byte_token_ids_[uint8_t(piece[k])]; id >= 0) out.push_back(id);
    }
  }
}

}  // namespace inflight
