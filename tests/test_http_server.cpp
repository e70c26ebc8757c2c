// The HTTP server in-process on a free port, driven by a plain Beast client: endpoints, OpenAI bodies,
// SSE streaming, errors, overload, and a client that disconnects mid-stream (its KV blocks must come back).
#include <utility>  // before asio (Boost 1.74 + g++ 12 in C++20)

#include <sys/socket.h>
#include <sys/time.h>

#include <doctest/doctest.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "http_test_support.hpp"

using namespace inflight;
using namespace inflight::test;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

TEST_CASE("health, models, unknown paths and wrong methods") {
  test_server served;
  simdjson::dom::parser parser;
  const reply health = call(served.port, http::verb::get, "/health");
  CHECK(health.status == 200);
  const reply models = call(served.port, http::verb::get, "/v1/models");
  CHECK(models.status == 200);
  CHECK(str(json(parser, models.body)["data"].at(0)["id"]) == "test-model");
  const reply missing = call(served.port, http::verb::get, "/v2/nothing");
  CHECK(missing.status == 404);
  CHECK(str(json(parser, missing.body)["error"]["message"]).find("/v2/nothing") != std::string::npos);
  CHECK(call(served.port, http::verb::get, "/v1/completions").status == 405);
  CHECK(call(served.port, http::verb::post, "/health").status == 405);
}

TEST_CASE("completions plain and streamed give the same text") {
  test_server served;
  simdjson::dom::parser parser;
  const std::string request = R"({"model": "test-model", "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0)";
  const reply plain = post(served.port, "/v1/completions", request + "}");
  REQUIRE(plain.status == 200);
  auto root = json(parser, plain.body);
  const std::string text = str(root["choices"].at(0)["text"]);
  CHECK(text.find("Paris") != std::string::npos);
  CHECK(str(root["choices"].at(0)["finish_reason"]) == "length");
  int64_t completion_tokens = 0;
  REQUIRE(root["usage"]["completion_tokens"].get_int64().get(completion_tokens) == simdjson::SUCCESS);
  CHECK(completion_tokens == 12);

  const reply streamed = post(served.port, "/v1/completions", request + R"(, "stream": true, "stream_options": {"include_usage": true}})");
  REQUIRE(streamed.status == 200);
  const auto events = sse_events(streamed.body);
  REQUIRE(events.size() >= 3);
  CHECK(events.back() == "[DONE]");
  std::string joined;
  for (size_t i = 0; i + 2 < events.size(); ++i) joined += str(json(parser, events[i])["choices"].at(0)["text"]);
  CHECK(joined == text);
  CHECK(str(json(parser, events[events.size() - 3])["choices"].at(0)["finish_reason"]) == "length");
  int64_t usage_tokens = 0;
  REQUIRE(json(parser, events[events.size() - 2])["usage"]["completion_tokens"].get_int64().get(usage_tokens) == simdjson::SUCCESS);
  CHECK(usage_tokens == 12);
}

TEST_CASE("logprobs: completions and chat, whole and streamed, one entry per token") {
  test_server served;
  simdjson::dom::parser parser;
  const auto real = [](simdjson::dom::element e) { return double(e); };

  // Completions: tokens, token_logprobs, top_logprobs (the 2 most likely plus the chosen one, as vLLM), text_offset.
  const std::string request = R"({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "ignore_eos": true, "logprobs": 2)";
  const reply plain = post(served.port, "/v1/completions", request + "}");
  REQUIRE(plain.status == 200);
  auto choice = json(parser, plain.body)["choices"].at(0);
  const std::string text = str(choice["text"]);
  auto logprobs = choice["logprobs"];
  REQUIRE(logprobs.is_object());
  std::vector<std::string> tokens;
  for (auto token : logprobs["tokens"].get_array()) tokens.push_back(str(token));
  REQUIRE(tokens.size() == 8);
  std::string joined;
  int64_t offset = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    CHECK(int64_t(logprobs["text_offset"].at(i)) == offset);  // ASCII here: characters are bytes
    offset += int64_t(tokens[i].size());
    joined += tokens[i];
    const double chosen = real(logprobs["token_logprobs"].at(i));
    CHECK(chosen <= 0.0);
    auto top = logprobs["top_logprobs"].at(i).get_object();
    CHECK(top.size() == 2);  // greedy: the chosen token is the most likely, already among the two
    double best = -1e30, total = 0;
    for (auto field : top) {
      best = std::max(best, real(field.value));
      total += std::exp(real(field.value));
    }
    CHECK(chosen == doctest::Approx(best));  // greedy picks the most likely token
    CHECK(double(top[tokens[i]]) == doctest::Approx(chosen));
    CHECK(total <= 1.0 + 1e-6);
  }
  CHECK(joined == text);
  // Not asked for: null.
  CHECK(json(parser, post(served.port, "/v1/completions", R"({"prompt": "Hi", "max_tokens": 2})").body)["choices"].at(0)["logprobs"].is_null());

  // Streamed: the chunks' entries add up to the same tokens and values.
  const reply streamed = post(served.port, "/v1/completions", request + R"(, "stream": true})");
  REQUIRE(streamed.status == 200);
  std::vector<std::string> streamed_tokens;
  std::vector<int64_t> streamed_offsets;
  for (const std::string& event : sse_events(streamed.body)) {
    if (event == "[DONE]") break;
    auto chunk_logprobs = json(parser, event)["choices"].at(0)["logprobs"];
    for (auto token : chunk_logprobs["tokens"].get_array()) streamed_tokens.push_back(str(token));
    for (auto at : chunk_logprobs["text_offset"].get_array()) streamed_offsets.push_back(int64_t(at));
  }
  CHECK(streamed_tokens == tokens);
  REQUIRE(streamed_offsets.size() == tokens.size());
  CHECK(streamed_offsets.back() == int64_t(text.size() - tokens.back().size()));

  // Chat: content entries with bytes and top_logprobs lists, streamed.
  const reply chat = post(served.port, "/v1/chat/completions",
      R"({"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 6, "temperature": 0, "ignore_eos": true, "logprobs": true, "top_logprobs": 3, "stream": true})");
  REQUIRE(chat.status == 200);
  std::string content, from_entries;
  size_t entries = 0;
  for (const std::string& event : sse_events(chat.body)) {
    if (event == "[DONE]") break;
    auto delta_choice = json(parser, event)["choices"].at(0);
    content += str(delta_choice["delta"]["content"]);
    for (auto entry : delta_choice["logprobs"]["content"].get_array()) {
      ++entries;
      const std::string token = str(entry["token"]);
      from_entries += token;
      std::string bytes;
      for (auto byte : entry["bytes"].get_array()) bytes.push_back(char(int64_t(byte)));
      CHECK(bytes == token);  // plain text: the raw bytes are the token's text
      auto top = entry["top_logprobs"].get_array();
      CHECK(top.size() == 3);
      CHECK(str(top.at(0)["token"]) == token);
      CHECK(real(top.at(0)["logprob"]) == doctest::Approx(real(entry["logprob"])));
      CHECK(real(top.at(0)["logprob"]) >= real(top.at(1)["logprob"]));
    }
  }
  CHECK(entries == 6);
  CHECK(from_entries == content);

  // WebSocket deltas carry them too (checked below with the other WebSocket tests' client).
  CHECK(served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("chat completions, several prompts and n") {
  test_server served;
  simdjson::dom::parser parser;
  const reply chat = post(served.port, "/v1/chat/completions",
                          R"({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0})");
  REQUIRE(chat.status == 200);
  auto root = json(parser, chat.body);
  CHECK(str(root["object"]) == "chat.completion");
  CHECK(str(root["choices"].at(0)["message"]["role"]) == "assistant");
  CHECK_FALSE(str(root["choices"].at(0)["message"]["content"]).empty());

  const reply many = post(served.port, "/v1/completions", R"({"prompt": ["One, two,", "Red, green,"], "n": 2, "max_tokens": 4, "temperature": 0})");
  REQUIRE(many.status == 200);
  root = json(parser, many.body);
  simdjson::dom::array choices;
  REQUIRE(root["choices"].get_array().get(choices) == simdjson::SUCCESS);
  REQUIRE(choices.size() == 4);
  // Greedy: both choices of a prompt agree; the two prompts differ.
  CHECK(str(choices.at(0)["text"]) == str(choices.at(1)["text"]));
  CHECK(str(choices.at(2)["text"]) == str(choices.at(3)["text"]));
  CHECK(str(choices.at(0)["text"]) != str(choices.at(2)["text"]));
}

TEST_CASE("bad requests get OpenAI errors with the right status") {
  net::server_options options;
  options.body_limit = 4096;
  test_server served({}, options);
  simdjson::dom::parser parser;
  const reply bad_json = post(served.port, "/v1/completions", R"({"prompt": )");
  CHECK(bad_json.status == 400);
  CHECK(str(json(parser, bad_json.body)["error"]["message"]).find("invalid JSON") != std::string::npos);
  const reply bad_field = post(served.port, "/v1/completions", R"({"prompt": "x", "temperature": -1})");
  CHECK(bad_field.status == 400);
  CHECK(str(json(parser, bad_field.body)["error"]["param"]) == "temperature");
  const reply wrong_model = post(served.port, "/v1/completions", R"({"prompt": "x", "model": "gpt-9"})");
  CHECK(wrong_model.status == 404);
  CHECK(str(json(parser, wrong_model.body)["error"]["param"]) == "model");
  const reply too_long = post(served.port, "/v1/completions", R"({"prompt": "x", "max_tokens": 9000})");
  CHECK(too_long.status == 400);
  CHECK(str(json(parser, too_long.body)["error"]["message"]).find("context length") != std::string::npos);
  const reply too_big = post(served.port, "/v1/completions", R"({"prompt": ")" + std::string(8000, 'a') + R"("})");
  CHECK(too_big.status == 413);
  CHECK(served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("a full waiting queue answers 429 with Retry-After") {
  engine_options options;
  options.max_num_seqs = 1;
  options.max_waiting = 1;
  test_server served(options);
  const std::string long_request = R"({"prompt": "x", "max_tokens": 300, "ignore_eos": true})";
  std::thread first([&] { post(served.port, "/v1/completions", long_request); });
  wait_for([&] { return served.engine->stats().running == 1; });
  std::thread second([&] { post(served.port, "/v1/completions", long_request); });
  wait_for([&] { return served.engine->stats().waiting == 1; });
  REQUIRE(served.engine->stats().waiting == 1);
  const reply refused = post(served.port, "/v1/completions", long_request);
  CHECK(refused.status == 429);
  CHECK(refused.retry_after == "1");
  first.join();
  second.join();
}

TEST_CASE("a client that disconnects mid-stream has its request cancelled and its blocks freed") {
  test_server served;
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
  const std::string body = R"({"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true, "stream": true})";
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  asio::write(socket, asio::buffer(request));
  char buffer[4096];
  size_t received = 0;
  while (received < 2000) received += socket.read_some(asio::buffer(buffer));  // a few chunks are streaming
  CHECK(served.engine->stats().running == 1);
  socket.close();
  wait_for([&] { return served.engine->stats().running == 0; });
  const engine_stats stats = served.engine->stats();
  CHECK(stats.running == 0);
  CHECK(stats.cancelled == 1);
  CHECK(stats.kv_blocks_used == 0);
  CHECK(stats.generated_tokens < 4000);
}

TEST_CASE("tokenize and detokenize round-trip the engine's ids") {
  test_server served;
  simdjson::dom::parser parser;
  const reply tokens = post(served.port, "/tokenize", R"({"prompt": "The capital of France is"})");
  REQUIRE(tokens.status == 200);
  auto root = json(parser, tokens.body);
  simdjson::dom::array ids;
  REQUIRE(root["tokens"].get_array().get(ids) == simdjson::SUCCESS);
  std::vector<int32_t> got;
  for (simdjson::dom::element id : ids) got.push_back(int32_t(int64_t(id)));
  CHECK(got == served.tok->encode("The capital of France is", true));
  int64_t count = 0;
  REQUIRE(root["count"].get_int64().get(count) == simdjson::SUCCESS);
  CHECK(count == int64_t(got.size()));

  std::string body = R"({"tokens": [)";
  for (size_t i = 0; i < got.size(); ++i) body += (i ? "," : "") + std::to_string(got[i]);
  const reply text = post(served.port, "/detokenize", body + "]}");
  REQUIRE(text.status == 200);
  CHECK(str(json(parser, text.body)["prompt"]) == served.tok->decode(got));

  const reply out_of_range = post(served.port, "/detokenize", R"({"tokens": [1, 99999999]})");
  CHECK(out_of_range.status == 400);
  CHECK(str(json(parser, out_of_range.body)["error"]["param"]) == "tokens");
  CHECK(post(served.port, "/tokenize", R"({"text": "x"})").status == 400);
  CHECK(call(served.port, http::verb::get, "/tokenize").status == 405);
}

TEST_CASE("oversized headers get 431 and an idle connection is closed after the read timeout") {
  net::server_options options;
  options.header_limit = 1024;
  options.read_timeout = std::chrono::seconds(1);
  test_server served({}, options);
  asio::io_context io;
  {
    beast::tcp_stream stream(io);
    stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
    http::request<http::string_body> request{http::verb::get, "/health", 11};
    request.set(http::field::host, "localhost");
    request.set("X-Padding", std::string(4000, 'p'));
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    CHECK(response.result_int() == 431);
  }
  // Sends nothing: the server must close the connection (end of file here). A server that never does
  // would leave the read to our own 30 s receive timeout, a different error.
  tcp::socket idle(io);
  idle.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
  const timeval receive_timeout{30, 0};
  setsockopt(idle.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout);
  char byte;
  beast::error_code ec;
  idle.read_some(asio::buffer(&byte, 1), ec);
  CHECK(ec == asio::error::eof);
}

TEST_CASE("stopping lets running requests finish within the grace period and cancels the rest") {
  for (const bool generous : {true, false}) {
    test_server served;
    simdjson::dom::parser parser;
    reply answer;
    std::thread client([&] { answer = post(served.port, "/v1/completions", R"({"prompt": "x", "max_tokens": 200, "ignore_eos": true})"); });
    wait_for([&] { return served.engine->stats().running == 1; });
    REQUIRE(served.engine->stats().running == 1);
    served.server->stop(generous ? std::chrono::milliseconds(120000) : std::chrono::milliseconds(0));
    client.join();
    REQUIRE(answer.status == 200);
    auto choice = json(parser, answer.body)["choices"].at(0);
    CHECK(str(choice["finish_reason"]) == (generous ? "length" : "abort"));
    CHECK(served.engine->stats().kv_blocks_used == 0);
    // No longer listening.
    asio::io_context io;
    tcp::socket socket(io);
    beast::error_code ec;
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port), ec);
    CHECK(ec);
  }
}

TEST_CASE("ready once the engine runs") {
  test_server served;
  CHECK(call(served.port, http::verb::get, "/ready").status == 200);
}

// The value on a Prometheus text line "NAME VALUE" ("" when there is no such line).
std::string metric_value(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return {};
  const size_t start = at + name.size() + 2;
  return text.substr(start, text.find('\n', start) - start);
}

TEST_CASE("metrics report outcomes, latencies and the engine's state in Prometheus format") {
  test_server served;
  REQUIRE(post(served.port, "/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 12, "ignore_eos": true, "stream": true})").status == 200);
  REQUIRE(post(served.port, "/v1/completions", R"({"prompt": "x", "top_p": 7})").status == 400);
  // The engine's numbers are a snapshot refreshed once a second: wait for it to show the request.
  std::string text;
  wait_for([&] {
    text = call(served.port, http::verb::get, "/metrics").body;
    return text.find("inflight_generation_tokens_total 12\n") != std::string::npos;
  });
  INFO(text);
  CHECK(text.find("# TYPE inflight_time_to_first_token_seconds histogram\n") != std::string::npos);
  CHECK(text.find("inflight_requests_finished_total{finish_reason=\"length\"} 1\n") != std::string::npos);
  CHECK(text.find("inflight_requests_rejected_total{status=\"400\"} 1\n") != std::string::npos);
  CHECK(text.find("inflight_time_to_first_token_seconds_count 1\n") != std::string::npos);
  CHECK(text.find("inflight_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1\n") != std::string::npos);
  CHECK(text.find("inflight_e2e_request_latency_seconds_count 1\n") != std::string::npos);
  CHECK(text.find("inflight_inter_token_latency_seconds_count 0\n") == std::string::npos);  // some gaps seen
  CHECK(text.find("inflight_generation_tokens_total 12\n") != std::string::npos);
  CHECK(text.find("inflight_kv_blocks_used 0\n") != std::string::npos);
  CHECK(text.find("inflight_num_requests_running 0\n") != std::string::npos);
  // The engine's histograms: one queue time for the one request; one batch size per step, each of 1.
  CHECK(text.find("inflight_request_queue_time_seconds_count 1\n") != std::string::npos);
  const std::string steps = metric_value(text, "inflight_engine_steps_total");
  CHECK(std::stoi(steps) >= 12);  // a prefill and at least 11 decodes
  CHECK(metric_value(text, "inflight_step_batch_size_count") == steps);
  CHECK(metric_value(text, "inflight_step_batch_size_bucket{le=\"1\"}") == steps);
}

TEST_CASE("WebSocket: concurrent requests on one socket stream deltas and a done frame each") {
  test_server served;
  simdjson::dom::parser parser;
  const std::string rest_text = str(json(parser, post(served.port, "/v1/completions",
      R"({"prompt": "The capital of France is", "max_tokens": 10, "temperature": 0})").body)["choices"].at(0)["text"]);
  ws_client client(served.port);
  client.send(R"({"id": "first", "type": "completion", "prompt": "The capital of France is", "max_tokens": 10, "temperature": 0})");
  client.send(R"({"id": 2, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6, "temperature": 0})");
  client.send(R"({"id": "bad", "prompt": "x", "n": 0})");
  client.send(R"({"id": "lp", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0, "ignore_eos": true, "logprobs": 1})");
  std::map<std::string, std::string> texts;
  std::map<std::string, std::string> done;
  std::string logprob_tokens;
  size_t logprob_entries = 0;
  while (done.size() < 4) {
    const std::string frame = client.receive();
    auto root = json(parser, frame);
    const std::string id = root["id"].is_string() ? str(root["id"]) : std::to_string(int64_t(root["id"]));
    const std::string type = str(root["type"]);
    if (type == "delta") texts[id] += str(root["text"]);
    else done[id] = frame;
    if (type == "delta") CHECK((root["logprobs"].error() == simdjson::SUCCESS) == (id == "lp"));  // only when asked
    if (id == "lp" && type == "delta") {
      for (auto token : root["logprobs"]["tokens"].get_array()) {
        logprob_tokens += str(token);
        ++logprob_entries;
      }
    }
  }
  CHECK(logprob_entries == 5);
  CHECK(logprob_tokens == texts["lp"]);
  CHECK(texts["lp"] == rest_text.substr(0, texts["lp"].size()));
  CHECK(texts["first"] == rest_text);
  CHECK_FALSE(texts["2"].empty());
  CHECK(str(json(parser, done["first"])["type"]) == "done");
  CHECK(str(json(parser, done["first"])["choices"].at(0)["finish_reason"]) == "length");
  CHECK(int64_t(json(parser, done["2"])["usage"]["completion_tokens"]) == 6);
  CHECK(str(json(parser, done["bad"])["type"]) == "error");
  CHECK(str(json(parser, done["bad"])["error"]["param"]) == "n");
  client.ws.close(websocket::close_code::normal);
  CHECK(served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("WebSocket: a cancel message and a closed socket both stop generation and free the blocks") {
  test_server served;
  simdjson::dom::parser parser;
  {
    ws_client client(served.port);
    client.send(R"({"id": "long", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true})");
    for (int deltas = 0; deltas < 3;) deltas += str(json(parser, client.receive())["type"]) == "delta";
    client.send(R"({"id": "long", "type": "cancel"})");
    std::string frame;
    do frame = client.receive();
    while (str(json(parser, frame)["type"]) == "delta");
    CHECK(str(json(parser, frame)["type"]) == "done");
    CHECK(str(json(parser, frame)["choices"].at(0)["finish_reason"]) == "abort");
    CHECK(int64_t(json(parser, frame)["usage"]["completion_tokens"]) < 4000);
    client.ws.close(websocket::close_code::normal);
  }
  {
    ws_client client(served.port);
    client.send(R"({"id": 1, "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true})");
    for (int deltas = 0; deltas < 3;) deltas += str(json(parser, client.receive())["type"]) == "delta";
    beast::get_lowest_layer(client.ws).close();  // gone without a close frame
  }
  wait_for([&] { return served.engine->stats().running == 0; });
  const engine_stats stats = served.engine->stats();
  CHECK(stats.running == 0);
  CHECK(stats.cancelled == 2);
  CHECK(stats.kv_blocks_used == 0);
}

TEST_CASE("the chat page is served from the binary") {
  test_server served;
  const reply page = call(served.port, http::verb::get, "/");
  CHECK(page.status == 200);
  CHECK(page.body.find("<title>inflight</title>") != std::string::npos);
  CHECK(page.body.find("/v1/ws") != std::string::npos);
  CHECK(page.body.size() > 1000);
}

TEST_CASE("API keys: 401 without a valid one, health stays open") {
  net::server_options options;
  options.api_keys = {"sesame"};
  test_server served({}, options);
  CHECK(call(served.port, http::verb::get, "/health").status == 200);
  const reply refused = call(served.port, http::verb::get, "/v1/models");
  CHECK(refused.status == 401);
  simdjson::dom::parser parser;
  CHECK(str(json(parser, refused.body)["error"]["type"]) == "authentication_error");

  asio::io_context io;
  auto with_key = [&](const std::string& key) {
    beast::tcp_stream stream(io);
    stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
    http::request<http::string_body> request{http::verb::get, "/v1/models", 11};
    request.set(http::field::host, "localhost");
    request.set(http::field::authorization, "Bearer " + key);
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    return int(response.result_int());
  };
  CHECK(with_key("sesame") == 200);
  CHECK(with_key("wrong") == 401);

  websocket::stream<beast::tcp_stream> ws(io);
  beast::get_lowest_layer(ws).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
  beast::error_code ec;
  ws.handshake("localhost", "/v1/ws", ec);
  CHECK(ec);  // refused without the key
  websocket::stream<beast::tcp_stream> ws_ok(io);
  beast::get_lowest_layer(ws_ok).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
  ws_ok.handshake("localhost", "/v1/ws?api_key=sesame", ec);
  CHECK_FALSE(ec);
}

TEST_CASE("a kept-alive connection serves request after request") {
  // Regression: the disconnect watcher of one request once woke for the next request's bytes after the
  // session had read them, and blocked the server in a peek (this test then hangs until ctest's timeout).
  test_server served;
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
  beast::flat_buffer buffer;
  for (int i = 0; i < 5; ++i) {
    http::request<http::string_body> request{http::verb::post, "/v1/completions", 11};
    request.set(http::field::host, "localhost");
    request.keep_alive(true);
    request.body() = i % 2 ? R"({"prompt": "Hi", "max_tokens": 3, "stream": true})" : R"({"prompt": "Hi", "max_tokens": 3})";
    request.prepare_payload();
    http::write(stream, request);
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    CHECK(response.result_int() == 200);
  }
}

TEST_CASE("random bytes, truncated requests and garbage WebSocket frames never take the server down") {
  net::server_options options;
  options.read_timeout = std::chrono::seconds(2);  // truncated requests are dropped after this
  test_server served({}, options);
  std::mt19937 rng(2024);
  const std::string body = R"({"prompt": "Once upon a time", "max_tokens": 64, "ignore_eos": true, "stream": true})";
  const std::string valid = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
  auto send_and_close = [&](const std::string& bytes, bool read_a_little) {
    asio::io_context io;
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
    beast::error_code ec;
    asio::write(socket, asio::buffer(bytes), ec);
    if (read_a_little) {
      char buffer[512];
      socket.read_some(asio::buffer(buffer), ec);  // whatever comes first: an error reply, a chunk, or EOF
    }
    socket.close(ec);
  };
  // Random bytes, some starting like a request line.
  for (int i = 0; i < 40; ++i) {
    std::string bytes(std::uniform_int_distribution<size_t>(1, 3000)(rng), '\0');
    for (char& c : bytes) c = char(std::uniform_int_distribution<int>(0, 255)(rng));
    if (i % 4 == 0) bytes = "POST /v1/completions HTTP/1.1\r\n" + bytes;
    send_and_close(bytes, i % 4 == 2);  // a bad request line is answered (or dropped) at once
  }
  // A valid streaming request cut at every kind of point: in the request line, the headers, the body
  // (Content-Length promises more than comes), or complete but the client leaves at once.
  for (int i = 0; i < 40; ++i) {
    const size_t cut = std::uniform_int_distribution<size_t>(1, valid.size())(rng);
    send_and_close(valid.substr(0, cut), false);
  }
  for (int i = 0; i < 4; ++i) send_and_close(valid, true);  // complete, left after the first bytes back
  // A WebSocket that sends garbage after its handshake, then a valid request it abandons mid-stream.
  {
    ws_client client(served.port);
    beast::get_lowest_layer(client.ws).socket().send(asio::buffer(std::string("\x81\xff garbage that is no frame")));
  }
  {
    ws_client client(served.port);
    client.send(R"({"id": 1, "prompt": "Once upon a time", "max_tokens": 500, "ignore_eos": true})");
    client.receive();
    beast::get_lowest_layer(client.ws).socket().close();
  }
  // Still serving, and nothing left running or holding blocks.
  CHECK(call(served.port, http::verb::get, "/health").status == 200);
  simdjson::dom::parser parser;
  const reply after = post(served.port, "/v1/completions", R"({"prompt": "Hello", "max_tokens": 4})");
  REQUIRE(after.status == 200);
  CHECK_FALSE(str(json(parser, after.body)["choices"].at(0)["text"]).empty());
  wait_for([&] {
    const engine_stats stats = served.engine->stats();
    return stats.running == 0 && stats.waiting == 0 && stats.kv_blocks_used == 0;
  });
  const engine_stats stats = served.engine->stats();
  CHECK(stats.running == 0);
  CHECK(stats.kv_blocks_used == 0);
}
