// One request's text output on the real SmolLM2 tokenizer: token ids in, deltas out, truncated before a
// stop string, no half characters, and finish() releasing whatever was held back.
#include <doctest/doctest.h>

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

// tests/ has no include path to actors/ (one CMake line per suite), hence the relative path.
#include "request_output.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"
#include "unicode_text.hpp"

using inflight::engine::request_output;
using inflight::tokenizer;

namespace {

// The real model's tokenizer, loaded once; fails the calling test with a clear message if absent.
std::shared_ptr<const tokenizer> model_tokenizer() {
  static std::shared_ptr<const tokenizer> tok = [] {
    if (!std::filesystem::exists(INFLIGHT_DEFAULT_MODEL)) return std::shared_ptr<const tokenizer>();
    return tokenizer::from_gguf(*inflight::gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL));
  }();
  if (!tok) FAIL("default model missing: " << INFLIGHT_DEFAULT_MODEL << " (run tools/setup.sh to fetch it)");
  return tok;
}

// The ids of `text` as the model would generate them: no BOS/EOS the metadata may add.
std::vector<int32_t> generated_ids(const tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  for (int32_t id : tok.encode(text, false))
    if (!tok.is_special(id)) ids.push_back(id);
  REQUIRE(tok.decode(ids) == text);
  return ids;
}

// The index of the first token after which the decoded text contains `stop`.
size_t completing_token(const tokenizer& tok, const std::vector<int32_t>& ids, const std::string& stop) {
  for (size_t k = 1; k <= ids.size(); ++k)
    if (tok.decode(std::span(ids.data(), k)).find(stop) != std::string::npos) return k - 1;
  FAIL("the text does not contain the stop");
  return 0;
}

struct streamed {
  std::string text;      // every delta, finish() included
  int stop_token = -1;   // index of the token on which on_token first returned true
};

// Feeds `ids` one by one (each delta must be valid UTF-8), then finishes.
streamed run(request_output& output, const std::vector<int32_t>& ids) {
  streamed result;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string delta;
    const bool stopped = output.on_token(ids[i], delta);
    CHECK(inflight::unicode::is_valid_utf8(delta));
    result.text += delta;
    if (stopped && result.stop_token < 0) result.stop_token = int(i);
    CHECK(stopped == (result.stop_token >= 0));
  }
  std::string delta;
  output.finish(delta);
  CHECK(inflight::unicode::is_valid_utf8(delta));
  result.text += delta;
  CHECK(output.text() == result.text);
  return result;
}

}  // namespace

TEST_CASE("a stop string in the generated text ends the output before it") {
  auto tok = model_tokenizer();
  const std::string stop = "\n\nUser:";
  const std::string text = "The answer is 42.\n\nUser: and then what?";
  const auto ids = generated_ids(*tok, text);
  request_output output(tok, {"###", stop});
  const auto r = run(output, ids);
  CHECK(r.text == "The answer is 42.");
  CHECK(r.stop_token == int(completing_token(*tok, ids, stop)));
  CHECK(output.stopped());
  CHECK(output.matched_stop() == stop);
}

TEST_CASE("without a stop the deltas add up to the decoded text") {
  auto tok = model_tokenizer();
  const std::string text = "Paris is the capital of France. Ünïcödé, 東京, and 👍🏽 too.\n\nDone";
  const auto ids = generated_ids(*tok, text);
  request_output output(tok, {"\n\nUser:", "STOP"});
  const auto r = run(output, ids);
  CHECK(r.text == tok->decode(ids, true));
  CHECK(r.stop_token == -1);
  CHECK_FALSE(output.stopped());
  CHECK(output.matched_stop().empty());

  request_output no_stops(tok, {});
  CHECK(run(no_stops, ids).text == text);
}

TEST_CASE("an emoji split across tokens is emitted whole and can be a stop") {
  auto tok = model_tokenizer();
  // SmolLM2 splits " 🦀" as " \xF0\x9F" + "\xA6" + "\x80"; "🥑" shares its first two bytes.
  const std::string text = "I am happy 🥑 and 🦀 really 🦀";
  const auto ids = generated_ids(*tok, text);
  // The emoji's 4 bytes span tokens: some token on its own is not valid UTF-8.
  bool some_token_splits_a_character = false;
  for (int32_t id : ids)
    some_token_splits_a_character |= !inflight::unicode::is_valid_utf8(tok->token_bytes(id));
  REQUIRE(some_token_splits_a_character);

  request_output plain(tok, {});
  CHECK(run(plain, ids).text == text);  // run() checks every delta is valid UTF-8

  request_output output(tok, {"🦀"});
  const auto r = run(output, ids);
  CHECK(r.text == "I am happy 🥑 and ");
  CHECK(r.stop_token == int(completing_token(*tok, ids, "🦀")));
}

TEST_CASE("finish releases a held-back partial stop") {
  auto tok = model_tokenizer();
  const std::string text = "Sure.\n\nUs";
  const auto ids = generated_ids(*tok, text);
  request_output output(tok, {"\n\nUser:"});
  std::string streamed_before_finish;
  for (int32_t id : ids) CHECK_FALSE(output.on_token(id, streamed_before_finish));
  CHECK(streamed_before_finish == "Sure.");  // "\n\nUs" could still become the stop
  std::string delta;
  output.finish(delta);
  CHECK(delta == "\n\nUs");
  CHECK(output.text() == text);
  CHECK_FALSE(output.stopped());
}

TEST_CASE("tokens after a stop add nothing") {
  auto tok = model_tokenizer();
  const auto ids = generated_ids(*tok, "one. two. three.");
  request_output output(tok, {"."});
  std::string all;
  bool stopped = false;
  for (int32_t id : ids) stopped = output.on_token(id, all);
  CHECK(stopped);
  std::string delta;
  output.finish(delta);
  CHECK(delta.empty());
  CHECK(all == "one");
  CHECK(output.text() == "one");
}

TEST_CASE("special tokens are skipped unless asked for") {
  auto tok = model_tokenizer();
  const int32_t eos = tok->eos_id();
  REQUIRE(eos >= 0);
  const auto ids = generated_ids(*tok, "Hi");

  request_output skipping(tok, {});
  std::string text;
  for (int32_t id : ids) skipping.on_token(id, text);
  skipping.on_token(eos, text);
  skipping.finish(text);
  CHECK(text == "Hi");

  request_output keeping(tok, {}, false);
  std::string with_special;
  for (int32_t id : ids) keeping.on_token(id, with_special);
  keeping.on_token(eos, with_special);
  keeping.finish(with_special);
  CHECK(with_special == "Hi" + tok->token_bytes(eos));
}
