// Response bodies and the JSON writer under them, read back with simdjson (an independent parser): valid
// JSON, the fields OpenAI clients read, and strings that survive any byte the model can produce.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"
#include "json_writer.hpp"
#include "openai_response.hpp"

using namespace inflight;
using namespace inflight::net;

namespace {

simdjson::dom::element parse(simdjson::dom::parser& parser, const std::string& json) {
  simdjson::dom::element root;
  const auto error = parser.parse(json).get(root);
  INFO("json: " << json);
  REQUIRE(error == simdjson::SUCCESS);
  return root;
}

std::string text_of(simdjson::dom::element element) {
  std::string_view text;
  REQUIRE(element.get_string().get(text) == simdjson::SUCCESS);
  return std::string(text);
}

int64_t int_of(simdjson::dom::element element) {
  int64_t number = 0;
  REQUIRE(element.get_int64().get(number) == simdjson::SUCCESS);
  return number;
}

const response_meta meta{"cmpl-42", 1700000000, "smollm2"};

}  // namespace

TEST_CASE("strings round-trip through the writer whatever their bytes") {
  simdjson::dom::parser parser;
  std::vector<std::string> samples = {"", "plain", "quote \" backslash \\ slash /", "tab\tnewline\ncr\rbell\x07",
                                      std::string("nul\0byte", 8), "caf\xc3\xa9 \xf0\x9f\x98\x80", "\x1f\x7f"};
  // Every control character, and random valid UTF-8 from code points across the planes.
  std::string controls;
  for (int c = 0; c < 0x20; ++c) controls.push_back(char(c));
  samples.push_back(controls);
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> code_point(1, 0x10FFFF);
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int k = 0; k < 20; ++k) {
      uint32_t cp = code_point(rng);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';  // surrogates are not characters
      if (cp < 0x80) s.push_back(char(cp));
      else if (cp < 0x800) { s.push_back(char(0xC0 | (cp >> 6))); s.push_back(char(0x80 | (cp & 0x3F))); }
      else if (cp < 0x10000) { s.push_back(char(0xE0 | (cp >> 12))); s.push_back(char(0x80 | ((cp >> 6) & 0x3F))); s.push_back(char(0x80 | (cp & 0x3F))); }
      else { s.push_back(char(0xF0 | (cp >> 18))); s.push_back(char(0x80 | ((cp >> 12) & 0x3F))); s.push_back(char(0x80 | ((cp >> 6) & 0x3F))); s.push_back(char(0x80 | (cp & 0x3F))); }
    }
    samples.push_back(s);
  }
  for (const std::string& sample : samples) {
    std::string json;
    json_writer w(json);
    w.begin_object().key("s").value(sample).end_object();
    CHECK(text_of(parse(parser, json)["s"]) == sample);
  }
}

TEST_CASE("the writer separates members and elements at every depth") {
  std::string json;
  json_writer w(json);
  w.begin_object().key("a").value(int64_t(1)).key("b").begin_array().value(true).null().begin_object().end_object();
  w.begin_array().end_array().value(2.5).end_array().key("c").value("x").key("d").value(-0.0 / 0.0);
  w.key("e").raw("[1,\"two\"]").key("f").value(false).end_object();
  CHECK(json == R"({"a":1,"b":[true,null,{},[],2.5],"c":"x","d":null,"e":[1,"two"],"f":false})");
}

TEST_CASE("non-streaming completion and chat responses") {
  simdjson::dom::parser parser;
  const choice_output choices[] = {{0, "Paris.", engine::finish_reason::stop},
                                   {1, "Lyon \"is\" big", engine::finish_reason::length}};
  std::string json;
  write_response(json, endpoint::completions, meta, choices, {7, 9});
  auto root = parse(parser, json);
  CHECK(text_of(root["id"]) == "cmpl-42");
  CHECK(text_of(root["object"]) == "text_completion");
  CHECK(int_of(root["created"]) == 1700000000);
  CHECK(text_of(root["model"]) == "smollm2");
  CHECK(text_of(root["choices"].at(1)["text"]) == "Lyon \"is\" big");
  CHECK(text_of(root["choices"].at(0)["finish_reason"]) == "stop");
  CHECK(text_of(root["choices"].at(1)["finish_reason"]) == "length");
  CHECK(int_of(root["usage"]["total_tokens"]) == 16);

  json.clear();
  write_response(json, endpoint::chat_completions, meta, std::span(choices, 1), {3, 4});
  root = parse(parser, json);
  CHECK(text_of(root["object"]) == "chat.completion");
  CHECK(text_of(root["choices"].at(0)["message"]["role"]) == "assistant");
  CHECK(text_of(root["choices"].at(0)["message"]["content"]) == "Paris.");
  CHECK(int_of(root["usage"]["prompt_tokens"]) == 3);
}

TEST_CASE("streaming chunks, the usage chunk and error bodies") {
  simdjson::dom::parser parser;
  std::string json;
  write_chunk(json, endpoint::chat_completions, meta, {0, "Hel", engine::finish_reason::none}, true);
  auto root = parse(parser, json);
  CHECK(text_of(root["object"]) == "chat.completion.chunk");
  CHECK(text_of(root["choices"].at(0)["delta"]["role"]) == "assistant");
  CHECK(text_of(root["choices"].at(0)["delta"]["content"]) == "Hel");
  CHECK(root["choices"].at(0)["finish_reason"].is_null());

  json.clear();
  write_chunk(json, endpoint::chat_completions, meta, {0, "", engine::finish_reason::cancelled}, false);
  root = parse(parser, json);
  CHECK(root["choices"].at(0)["delta"]["role"].error() == simdjson::NO_SUCH_FIELD);
  CHECK(text_of(root["choices"].at(0)["finish_reason"]) == "abort");

  json.clear();
  write_chunk(json, endpoint::completions, meta, {2, "lo", engine::finish_reason::deadline}, false);
  root = parse(parser, json);
  CHECK(int_of(root["choices"].at(0)["index"]) == 2);
  CHECK(text_of(root["choices"].at(0)["text"]) == "lo");
  CHECK(text_of(root["choices"].at(0)["finish_reason"]) == "length");

  json.clear();
  write_usage_chunk(json, endpoint::completions, meta, {5, 6});
  root = parse(parser, json);
  simdjson::dom::array choices;
  REQUIRE(root["choices"].get_array().get(choices) == simdjson::SUCCESS);
  CHECK(choices.size() == 0);
  CHECK(int_of(root["usage"]["completion_tokens"]) == 6);

  json.clear();
  api_error error;
  error.message = "'top_p' must be in (0, 1]";
  error.param = "top_p";
  write_error(json, error);
  root = parse(parser, json);
  CHECK(text_of(root["error"]["message"]) == error.message);
  CHECK(text_of(root["error"]["type"]) == "invalid_request_error");
  CHECK(text_of(root["error"]["param"]) == "top_p");
  CHECK(root["error"]["code"].is_null());
  json.clear();
  write_error(json, api_error{400, "bad", "invalid_request_error", ""});
  CHECK(parse(parser, json)["error"]["param"].is_null());
}

TEST_CASE("logprobs name a token that splits a character by U+FFFD and keep its raw bytes") {
  if (!std::filesystem::exists(INFLIGHT_DEFAULT_MODEL)) FAIL("default model missing: " << INFLIGHT_DEFAULT_MODEL);
  const auto tok = tokenizer::from_gguf(*gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL));
  // SmolLM2 splits " 🦀" across three tokens; the first two are not valid UTF-8 alone.
  const std::vector<int32_t> ids = tok->encode(" 🦀", false);
  REQUIRE(ids.size() == 3);
  std::vector<sample_result> samples(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    samples[i].token = ids[i];
    samples[i].logprob = -0.5f * float(i + 1);
    samples[i].num_top = 1;
    samples[i].top[0] = {ids[i], samples[i].logprob};
  }
  simdjson::dom::parser parser;

  choice_logprobs chat{tok.get(), samples, 0};
  std::string out;
  write_logprobs(out, endpoint::chat_completions, chat);
  auto content = parse(parser, out)["content"];
  std::string raw;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto entry = content.at(i);
    for (auto byte : entry["bytes"].get_array()) raw.push_back(char(int_of(byte)));
    CHECK(double(entry["logprob"]) == doctest::Approx(-0.5 * double(i + 1)));
    CHECK(text_of(entry["top_logprobs"].at(0)["token"]) == text_of(entry["token"]));
  }
  CHECK(raw == " 🦀");  // the bytes put the character back together
  CHECK(text_of(content.at(0)["token"]) == " \xEF\xBF\xBD");  // " " + U+FFFD for the lone lead bytes

  // Completions: the offsets advance by each token's text in characters, across calls (stream chunks).
  choice_logprobs completion{tok.get(), std::span<const sample_result>(samples).first(1), 5};
  out.clear();
  write_logprobs(out, endpoint::completions, completion);
  auto first = parse(parser, out);
  CHECK(int_of(first["text_offset"].at(0)) == 5);
  CHECK(completion.text_offset == 7);  // " " and U+FFFD
  CHECK(first["top_logprobs"].at(0).get_object().size() == 1);  // the chosen token is the top one
}
