// Batch invariance on the real model: a request's greedy tokens (and the log-probabilities behind them)
// do not depend on what else runs in the same steps — batch size, chunked prefill mixed with other
// sequences' decode tokens, sequences joining and leaving, KV block size. The kernels make this hold
// bit for bit (each token's numbers come from the same instruction sequence whatever the batch:
// model/quant_dot.hpp), so the comparisons here are exact. Also batch_generator's contract: finish
// reasons, counts, stats, the token callback, request validation, seeded sampling and logprobs.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "inflight/batch_generator.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

using namespace inflight;

namespace {

constexpr int32_t greedy_length = 32;

struct fixture {
  std::shared_ptr<const gguf::gguf_file> file = gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL);
  std::shared_ptr<const tokenizer> tok = tokenizer::from_gguf(*file);
  std::vector<int32_t> end_ids = tok->end_of_generation_ids();
};

// Enough blocks for every request of `requests` to be resident at once, whatever the block size.
int32_t blocks_for_all(const std::vector<generation_request>& requests, int32_t block_size) {
  int32_t total = 0;
  for (const auto& request : requests) {
    total += (int32_t(request.prompt.size()) + request.max_tokens + block_size - 1) / block_size;
  }
  return total + 4;
}

std::unique_ptr<cpu_backend> make_backend(const fixture& f, int32_t block_size, int32_t num_blocks) {
  return std::make_unique<cpu_backend>(
      f.file, cpu_backend_options{.max_step_tokens = 512, .max_step_sequences = 64, .block_size = block_size,
                                  .num_blocks = num_blocks});
}

const char* const long_text =
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based inks and a wooden screw press adapted from those used to make wine. "
    "Before his invention, books were copied by hand, a slow and expensive process that kept literacy "
    "within the reach of a small elite of clergy, scholars and wealthy merchants. Within fifty years of "
    "the first printed Bible, presses had spread to more than two hundred cities across Europe, and "
    "millions of volumes were in circulation. Pamphlets carried the arguments of the Reformation from town "
    "to town, scientists could share precise diagrams and tables with colleagues they had never met, and "
    "standardised spelling slowly emerged from the habits of printers. Historians still debate how much of "
    "the scientific revolution would have happened without cheap, identical copies of the same text, but "
    "few doubt that the press changed how knowledge was made, checked and passed on. In the centuries that "
    "followed,";

// 16 prompts, 3 to ~200 tokens: plain text, chat-formatted, code, JSON, non-ASCII.
std::vector<std::vector<int32_t>> make_prompts(const tokenizer& tok) {
  const std::vector<std::string> texts = {
      "Once upon a time",
      long_text,
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the tallest "
      "mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
      "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
      "1, 2, 3, 4,",
      "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
      "Photosynthesis is the process by which green plants, algae and some bacteria turn light into chemical "
      "energy. Inside the chloroplasts, chlorophyll absorbs mostly red and blue light, and the energy is used "
      "to split water molecules, releasing oxygen. The second stage, the Calvin cycle, fixes carbon dioxide "
      "from the air into sugars. Because of this,",
      "Ingredients for pancakes:\n- flour\n-",
      "Translate to French: The cat sleeps on the warm windowsill.\nFrench:",
      "{\"name\": \"Alice\", \"age\": 30, \"city\": ",
      "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\nName three primary "
      "colours.<|im_end|>\n<|im_start|>assistant\nRed, blue and yellow.<|im_end|>\n<|im_start|>user\nAnd "
      "three secondary ones?<|im_end|>\n<|im_start|>assistant\n",
      "Q: What is 17 times 23?\nA:",
      std::string(long_text).substr(0, 420) + " Meanwhile, in a small village by the river,",
      "The quick brown fox",
      "Les élèves étudient la physique quantique à l'université de",
      "Hi there!",
  };
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& text : texts) prompts.push_back(tok.encode(text));
  return prompts;
}

sampling_params greedy_with_logprobs() {
  sampling_params params;
  params.temperature = 0.0f;
  params.logprobs = true;
  params.top_logprobs = 5;
  return params;
}

std::vector<generation_request> greedy_requests(const std::vector<std::vector<int32_t>>& prompts) {
  std::vector<generation_request> requests;
  for (const auto& prompt : prompts) {
    requests.push_back({prompt, greedy_with_logprobs(), greedy_length, true});
  }
  return requests;
}

// Each request through its own run(), nothing else in the steps.
std::vector<generation_output> run_alone(backend& model, const fixture& f,
                                         const std::vector<generation_request>& requests) {
  std::vector<generation_output> outputs;
  for (const auto& request : requests) {
    batch_generator generator(model, f.end_ids);
    outputs.push_back(std::move(generator.run({&request, 1}).front()));
  }
  return outputs;
}

// Tokens equal, and every reported logprob equal to the bit: the logits themselves did not move.
// `batched` may be shorter (a smaller max_tokens): it must then be a prefix of `alone`.
void check_same(const generation_output& batched, const generation_output& alone, size_t index) {
  CAPTURE(index);
  REQUIRE(batched.tokens.size() <= alone.tokens.size());
  const std::vector<int32_t> prefix(alone.tokens.begin(), alone.tokens.begin() + std::ptrdiff_t(batched.tokens.size()));
  CHECK(batched.tokens == prefix);
  REQUIRE(batched.logprobs.size() == batched.tokens.size());
  for (size_t i = 0; i < batched.logprobs.size(); ++i) {
    const sample_result& b = batched.logprobs[i];
    const sample_result& a = alone.logprobs[i];
    if (std::bit_cast<uint32_t>(b.logprob) != std::bit_cast<uint32_t>(a.logprob) || b.num_top != a.num_top) {
      FAIL_CHECK("token " << i << ": logprob " << b.logprob << " batched vs " << a.logprob << " alone");
      continue;
    }
    for (int32_t k = 0; k < b.num_top; ++k) {
      if (b.top[size_t(k)].token != a.top[size_t(k)].token ||
          std::bit_cast<uint32_t>(b.top[size_t(k)].logprob) != std::bit_cast<uint32_t>(a.top[size_t(k)].logprob)) {
        FAIL_CHECK("token " << i << ": top logprob " << k << " differs");
      }
    }
  }
}

void check_all_same(const std::vector<generation_output>& batched, const std::vector<generation_output>& alone) {
  REQUIRE(batched.size() == alone.size());
  for (size_t i = 0; i < batched.size(); ++i) check_same(batched[i], alone[i], i);
}

}  // namespace

TEST_CASE("16 prompts decoded together give exactly the greedy tokens each gives alone") {
  fixture f;
  const auto prompts = make_prompts(*f.tok);
  REQUIRE(prompts.size() == 16);
  size_t shortest = prompts[0].size(), longest = 0;
  for (const auto& prompt : prompts) {
    shortest = std::min(shortest, prompt.size());
    longest = std::max(longest, prompt.size());
  }
  MESSAGE("prompt lengths " << shortest << " to " << longest << " tokens");
  CHECK(shortest <= 4);
  CHECK(longest >= 150);

  const auto requests = greedy_requests(prompts);
  auto model = make_backend(f, 16, blocks_for_all(requests, 16));
  const auto alone = run_alone(*model, f, requests);
  for (const auto& output : alone) REQUIRE(output.tokens.size() == size_t(greedy_length));

  batch_generator generator(*model, f.end_ids, {.max_batch_sequences = 16});
  const auto together = generator.run(requests);
  check_all_same(together, alone);
  // They really ran side by side: a few prefill steps, then one step per token for all 16.
  MESSAGE("together: " << generator.stats().steps << " steps");
  CHECK(generator.stats().steps <= greedy_length + 3);
}

TEST_CASE("chunked prefill mixed with decode tokens and other block sizes give the alone tokens") {
  fixture f;
  auto requests = greedy_requests(make_prompts(*f.tok));
  // 16 tokens are enough here (the chunking happens while prompts prefill) and halve the alone runs' cost.
  for (auto& request : requests) request.max_tokens = 16;
  std::vector<generation_output> alone;
  {
    auto model = make_backend(f, 16, blocks_for_all(requests, 16));
    alone = run_alone(*model, f, requests);
  }
  for (const int32_t block_size : {16, 5}) {
    CAPTURE(block_size);
    auto model = make_backend(f, block_size, blocks_for_all(requests, block_size));
    // 24 tokens a step: long prompts are prefilled over several steps, sharing each with the decode tokens
    // of the sequences already running.
    batch_generator generator(*model, f.end_ids, {.max_batch_sequences = 16, .max_step_tokens = 24});
    check_all_same(generator.run(requests), alone);
    // Prefill alone needs more than (sum of prompt lengths) / 24 steps.
    int64_t prompt_tokens = 0;
    for (const auto& request : requests) prompt_tokens += int64_t(request.prompt.size());
    CHECK(generator.stats().steps > prompt_tokens / 24);
  }
}

TEST_CASE("sequences joining and leaving a running batch give the alone tokens") {
  fixture f;
  auto requests = greedy_requests(make_prompts(*f.tok));
  // Different lengths, so sequences leave at different steps and the waiting ones join mid-run.
  for (size_t i = 0; i < requests.size(); ++i) requests[i].max_tokens = int32_t(5 + (i * 11) % 28);
  auto model = make_backend(f, 16, blocks_for_all(requests, 16));
  const auto alone = run_alone(*model, f, requests);
  batch_generator generator(*model, f.end_ids, {.max_batch_sequences = 4, .max_step_tokens = 64});
  std::vector<size_t> order;  // request index of each generated token, in generation order
  const auto staggered = generator.run(requests, [&](size_t index, int32_t, const sample_result&) {
    order.push_back(index);
  });
  for (size_t i = 0; i < requests.size(); ++i) {
    CHECK(staggered[i].tokens.size() == size_t(requests[i].max_tokens));
    CHECK(staggered[i].reason == finish_reason::length);
  }
  check_all_same(staggered, alone);
  // The batch really was staggered: at most 4 sequences at a time, so request 4 produced its first token
  // only after one of requests 0..3 produced its last, while others were still running.
  const auto first_of = [&](size_t index) { return std::find(order.begin(), order.end(), index) - order.begin(); };
  const auto last_of = [&](size_t index) { return order.rend() - std::find(order.rbegin(), order.rend(), index) - 1; };
  CHECK(first_of(4) > std::min({last_of(0), last_of(1), last_of(2), last_of(3)}));
  CHECK(first_of(4) < std::max({last_of(0), last_of(1), last_of(2), last_of(3)}));
}

TEST_CASE("batch_generator reports finish reasons and counts and stats and calls back per token") {
  fixture f;
  const auto& end_ids = f.end_ids;
  REQUIRE_FALSE(end_ids.empty());
  const auto is_end = [&](int32_t token) { return std::find(end_ids.begin(), end_ids.end(), token) != end_ids.end(); };

  sampling_params greedy;
  greedy.temperature = 0.0f;
  std::vector<generation_request> requests = {
      // Stops by itself well within 64 tokens ("The capital of France is Paris.<|im_end|>"). The bare
      // "Say hi" chat prompt does not: this model greedily rambles past 64 tokens on it.
      {f.tok->encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"), greedy,
       64, false},
      // Runs to its limit.
      {f.tok->encode("The quick brown fox"), greedy, 7, true},
      {f.tok->encode("1, 2, 3, 4,"), greedy, 3, false},
      {f.tok->encode(std::string(long_text).substr(0, 300)), greedy, 1, false},
  };
  auto model = make_backend(f, 16, blocks_for_all(requests, 16));
  batch_generator generator(*model, end_ids, {.max_batch_sequences = 4, .max_step_tokens = 32});

  std::vector<std::vector<int32_t>> called_back(requests.size());
  size_t calls = 0;
  bool sample_matches = true;
  const auto outputs = generator.run(requests, [&](size_t index, int32_t token, const sample_result& sample) {
    REQUIRE(index < requests.size());
    called_back[index].push_back(token);
    sample_matches &= sample.token == token;
    ++calls;
  });
  REQUIRE(outputs.size() == requests.size());

  MESSAGE("chat answer: " << f.tok->decode(outputs[0].tokens));
  CHECK(outputs[0].reason == finish_reason::stop);
  REQUIRE_FALSE(outputs[0].tokens.empty());
  CHECK(outputs[0].tokens.size() < 64);
  CHECK(is_end(outputs[0].tokens.back()));
  CHECK(std::none_of(outputs[0].tokens.begin(), outputs[0].tokens.end() - 1, is_end));

  for (size_t i = 1; i < requests.size(); ++i) {
    CAPTURE(i);
    CHECK(outputs[i].reason == finish_reason::length);
    CHECK(outputs[i].tokens.size() == size_t(requests[i].max_tokens));
    if (!requests[i].ignore_eos) CHECK(std::none_of(outputs[i].tokens.begin(), outputs[i].tokens.end(), is_end));
  }

  int64_t prompt_tokens = 0, generated_tokens = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    prompt_tokens += int64_t(requests[i].prompt.size());
    generated_tokens += int64_t(outputs[i].tokens.size());
    CHECK(called_back[i] == outputs[i].tokens);
    CHECK(outputs[i].logprobs.empty());  // not asked for
  }
  CHECK(sample_matches);
  CHECK(calls == size_t(generated_tokens));
  CHECK(generator.stats().prompt_tokens == prompt_tokens);
  CHECK(generator.stats().generated_tokens == generated_tokens);
  // The longest request decodes one token a step after its prefill: at least that many steps.
  CHECK(generator.stats().steps >= int64_t(outputs[0].tokens.size()));
  CHECK(generator.stats().prefill_seconds > 0);
  CHECK(generator.stats().decode_seconds > 0);
}

TEST_CASE("run rejects requests that can never run before running anything") {
  fixture f;
  // 128 blocks of 64 tokens hold one full 8192-token context, so only the context check can fail there.
  auto model = make_backend(f, 64, 128);
  REQUIRE(model->config().context_length == 8192);
  batch_generator generator(*model, f.end_ids);

  sampling_params greedy;
  greedy.temperature = 0.0f;
  const generation_request valid{f.tok->encode("Hello there"), greedy, 2, true};
  // Exactly the context length: allowed (checked by putting an invalid request after it: the error
  // must name request 1, and nothing runs).
  const generation_request at_limit{valid.prompt, greedy, int32_t(8192 - valid.prompt.size()), true};

  const auto error_of = [&](const generation_request& bad) -> std::string {
    const std::vector<generation_request> requests = {at_limit, bad};
    size_t calls = 0;
    try {
      generator.run(requests, [&](size_t, int32_t, const sample_result&) { ++calls; });
    } catch (const std::invalid_argument& e) {
      CHECK(calls == 0);
      return e.what();
    }
    return "(no exception)";
  };

  generation_request empty = valid;
  empty.prompt.clear();
  CHECK(error_of(empty).find("request 1: empty prompt") == 0);

  generation_request zero_tokens = valid;
  zero_tokens.max_tokens = 0;
  CHECK(error_of(zero_tokens).find("request 1: max_tokens") == 0);
  zero_tokens.max_tokens = -5;
  CHECK(error_of(zero_tokens).find("request 1: max_tokens") == 0);

  generation_request too_long = valid;
  too_long.max_tokens = int32_t(8193 - valid.prompt.size());
  const std::string context_error = error_of(too_long);
  CAPTURE(context_error);
  CHECK(context_error.find("request 1: ") == 0);
  CHECK(context_error.find("context length 8192") != std::string::npos);

  generation_request bad_top_p = valid;
  bad_top_p.sampling.top_p = 0.0f;
  CHECK(error_of(bad_top_p).find("request 1: top_p") == 0);
  generation_request bad_temperature = valid;
  bad_temperature.sampling.temperature = -1.0f;
  CHECK(error_of(bad_temperature).find("request 1: temperature") == 0);

  // A cache smaller than one request: rejected up front instead of waiting forever for blocks.
  auto small_model = make_backend(f, 16, 4);
  batch_generator small_generator(*small_model, f.end_ids);
  const generation_request too_big{valid.prompt, greedy, 100, true};
  CHECK_THROWS_AS(small_generator.run({&too_big, 1}), std::invalid_argument);

  CHECK(generator.stats().steps == 0);
  CHECK(generator.stats().generated_tokens == 0);
  // Still usable after the rejections.
  const auto outputs = generator.run({&valid, 1});
  CHECK(outputs.front().tokens.size() == 2);
}

TEST_CASE("seeded sampling is reproducible alone and in a batch and across runs") {
  fixture f;
  sampling_params seeded;
  seeded.temperature = 0.8f;
  seeded.seed = 1234;
  const auto prompt = f.tok->encode("Once upon a time, in a kingdom far away,");
  const generation_request request{prompt, seeded, greedy_length, true};
  generation_request other_seed = request;
  other_seed.sampling.seed = 4321;
  generation_request greedy_neighbour{f.tok->encode(long_text), {}, 20, true};
  greedy_neighbour.sampling.temperature = 0.0f;
  generation_request unseeded{f.tok->encode("The quick brown fox"), {}, 24, true};

  const std::vector<generation_request> batch = {greedy_neighbour, other_seed, unseeded, request};
  auto model = make_backend(f, 16, blocks_for_all(batch, 16));
  const auto run_one = [&](const generation_request& r) {
    batch_generator generator(*model, f.end_ids);
    return generator.run({&r, 1}).front().tokens;
  };
  const auto first = run_one(request);
  const auto second = run_one(request);
  REQUIRE(first.size() == size_t(greedy_length));
  CHECK(first == second);

  batch_generator generator(*model, f.end_ids, {.max_batch_sequences = 4, .max_step_tokens = 16});
  const auto outputs = generator.run(batch);
  CHECK(outputs[3].tokens == first);
  CHECK(outputs[1].tokens == run_one(other_seed));
  CHECK(outputs[1].tokens != first);
  MESSAGE("seed 1234: " << f.tok->decode(first));
  MESSAGE("seed 4321: " << f.tok->decode(outputs[1].tokens));
}

TEST_CASE("logprobs are reported per token and the greedy token is the most likely") {
  fixture f;
  sampling_params with_logprobs = greedy_with_logprobs();
  sampling_params chosen_only;
  chosen_only.temperature = 0.0f;
  chosen_only.logprobs = true;
  const std::vector<generation_request> requests = {
      {f.tok->encode("The capital of France is"), with_logprobs, 16, true},
      {f.tok->encode("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"), with_logprobs, 16,
       true},
      {f.tok->encode("1, 2, 3, 4,"), chosen_only, 8, true},
  };
  auto model = make_backend(f, 16, blocks_for_all(requests, 16));
  batch_generator generator(*model, f.end_ids);
  const auto outputs = generator.run(requests);
  for (size_t r = 0; r < requests.size(); ++r) {
    CAPTURE(r);
    const auto& output = outputs[r];
    REQUIRE(output.logprobs.size() == output.tokens.size());
    REQUIRE(output.tokens.size() == size_t(requests[r].max_tokens));
    for (size_t i = 0; i < output.tokens.size(); ++i) {
      CAPTURE(i);
      const sample_result& sample = output.logprobs[i];
      CHECK(sample.token == output.tokens[i]);
      CHECK(sample.logprob <= 0.0f);
      CHECK(std::isfinite(sample.logprob));
      CHECK(sample.num_top == requests[r].sampling.top_logprobs);
      if (sample.num_top == 0) continue;
      // Greedy: the chosen token is the top entry, with the very same logprob.
      CHECK(sample.top[0].token == sample.token);
      CHECK(sample.top[0].logprob == sample.logprob);
      double mass = 0.0;
      for (int32_t k = 0; k < sample.num_top; ++k) {
        mass += std::exp(double(sample.top[size_t(k)].logprob));
        if (k > 0) CHECK(sample.top[size_t(k)].logprob <= sample.top[size_t(k - 1)].logprob);
      }
      CHECK(mass <= 1.0 + 1e-5);
    }
  }
  // "The capital of France is" -> " Paris", confidently.
  CHECK(f.tok->decode({outputs[0].tokens.data(), 1}) == " Paris");
  CHECK(outputs[0].logprobs[0].logprob > std::log(0.5f));
}
