// step_layout: the checks every backend applies to a step, and the flattened arrays the CUDA kernels read
// (query offsets, KV lengths, dense block tables), on hand-built steps whose layout is known.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "inflight/step_layout.hpp"

using namespace inflight;

namespace {

step_limits limits() {
  step_limits l;
  l.max_tokens = 32;
  l.max_sequences = 4;
  l.context_length = 64;
  l.vocab_size = 100;
  l.geometry = {4, 10};  // 4 tokens per block, 10 blocks
  l.max_blocks_per_sequence = 16;
  return l;
}

std::string error_of(step_layout& layout, const std::vector<sequence_chunk>& step, int64_t capacity = -1) {
  try {
    layout.prepare(step, capacity);
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a mixed step: a prefill chunk continuing a sequence, and two decodes") {
  step_layout layout(limits());
  const std::vector<int32_t> prefill = {5, 6, 7}, decode_a = {8}, decode_b = {9};
  const std::vector<int32_t> table_prefill = {3, 1}, table_a = {7, 2, 9}, table_b = {0};
  // The prefill chunk's tokens sit at positions 2..4 (two tokens already cached), crossing into block 1.
  const std::vector<sequence_chunk> step = {{prefill, 2, table_prefill, true}, {decode_a, 9, table_a, true},
                                            {decode_b, 0, table_b, false}};
  layout.prepare(step);
  CHECK(layout.num_tokens() == 5);
  CHECK(layout.num_sequences() == 3);
  CHECK(layout.num_logits() == 2);
  CHECK_FALSE(layout.decode_only());
  CHECK(layout.max_query_len() == 3);
  CHECK(layout.max_seq_len() == 10);
  CHECK(std::vector<int32_t>(layout.token_ids().begin(), layout.token_ids().end()) == std::vector<int32_t>{5, 6, 7, 8, 9});
  CHECK(std::vector<int32_t>(layout.positions().begin(), layout.positions().end()) == std::vector<int32_t>{2, 3, 4, 9, 0});
  // slot = block * block_size + position % block_size
  CHECK(std::vector<int64_t>(layout.slots().begin(), layout.slots().end()) == std::vector<int64_t>{14, 15, 4, 37, 0});
  CHECK(std::vector<int32_t>(layout.token_chunk().begin(), layout.token_chunk().end()) == std::vector<int32_t>{0, 0, 0, 1, 2});
  CHECK(std::vector<int32_t>(layout.logits_tokens().begin(), layout.logits_tokens().end()) == std::vector<int32_t>{2, 3});
  CHECK(std::vector<int32_t>(layout.query_start_loc().begin(), layout.query_start_loc().end()) == std::vector<int32_t>{0, 3, 4, 5});
  CHECK(std::vector<int32_t>(layout.seq_lens().begin(), layout.seq_lens().end()) == std::vector<int32_t>{5, 10, 1});
  // Dense rows of 16: each row starts with its blocks in use (the rest is unspecified).
  const auto tables = layout.block_tables();
  REQUIRE(tables.size() == 3 * 16);
  CHECK(tables[0] == 3);
  CHECK(tables[1] == 1);
  CHECK(tables[16] == 7);
  CHECK(tables[17] == 2);
  CHECK(tables[18] == 9);
  CHECK(tables[32] == 0);

  // A pure decode step, reusing the same object: the arrays are rewritten, not appended to.
  layout.prepare(std::vector<sequence_chunk>{{decode_a, 10, table_a, true}});
  CHECK(layout.decode_only());
  CHECK(layout.num_tokens() == 1);
  CHECK(layout.seq_lens()[0] == 11);
  CHECK(layout.slots()[0] == 9 * 4 + 2);  // position 10: the third block of table_a
}

TEST_CASE("malformed steps are refused with a message naming the problem") {
  step_layout layout(limits());
  const std::vector<int32_t> one = {1}, two = {1, 2}, bad_token = {100}, table = {0, 1}, bad_table = {10};
  CHECK(error_of(layout, {{{}, 0, table, true}}).find("has no tokens") != std::string::npos);
  CHECK(error_of(layout, {{one, 64, table, true}}).find("past the context length") != std::string::npos);
  CHECK(error_of(layout, {{one, 8, table, true}}).find("does not cover position 8") != std::string::npos);
  CHECK(error_of(layout, {{one, 0, bad_table, true}}).find("block id 10 out of range") != std::string::npos);
  CHECK(error_of(layout, {{bad_token, 0, table, true}}).find("token id 100 out of range") != std::string::npos);
  CHECK(error_of(layout, {{one, 0, table, true}, {one, 0, table, true}}).find("same KV slot") != std::string::npos);
  CHECK(error_of(layout, {{two, 0, table, true}}, 99).find("logits buffer holds 99") != std::string::npos);
  const std::vector<sequence_chunk> too_many(5, sequence_chunk{one, 0, table, true});
  CHECK(error_of(layout, too_many).find("more than 4") != std::string::npos);
  std::vector<int32_t> many_tokens(33, 1), long_table(9, 0);
  for (int32_t i = 0; i < 9; ++i) long_table[size_t(i)] = i;
  CHECK(error_of(layout, {{many_tokens, 0, long_table, true}}).find("more than 32 tokens") != std::string::npos);
  // A dense block table narrower than the sequence's blocks.
  step_limits narrow = limits();
  narrow.max_blocks_per_sequence = 1;
  step_layout narrow_layout(narrow);
  CHECK(error_of(narrow_layout, {{two, 3, table, true}}).find("needs 2 blocks, more than 1") != std::string::npos);
}
