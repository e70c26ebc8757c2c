// `inflight generate`: load a GGUF model, run one prompt, stream the answer to stdout, and print prompt
// and generation speed to stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backend_choice.hpp"
#include "load_progress.hpp"
#include "cli_commands.hpp"
#include "cli_options.hpp"
#include "inflight/engine.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/detokenizer.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::cli {

namespace {

constexpr const char* generate_help = R"(usage: inflight generate --prompt TEXT [--prompt TEXT ...] [options]

Runs the model on TEXT and streams the answer to stdout; speeds go to stderr. With several --prompt
options the requests run together on the continuous-batching engine and each answer is printed whole,
as "[i] answer", in the order they finish.

  --model PATH            GGUF model (default: the model fetched by tools/setup.sh)
  --prompt TEXT           a prompt ('-' reads it from standard input); may be repeated
  --chat                  wrap each prompt as a user message in the model's chat template
  --system TEXT           system message for --chat (default: the template's own)
  --max-tokens N          tokens to generate at most (default 256)
  --stop TEXT             stop string: the answer ends before it (may be repeated)
  --timeout-ms N          give up on a request after N milliseconds (finish: deadline)
  --temperature T         0 = greedy (default 0.8)
  --top-k K               keep the K most likely tokens, 0 = off (default 40)
  --top-p P               nucleus sampling mass in (0, 1] (default 0.95)
  --min-p P               drop tokens below P x the top probability (default 0.05)
  --repetition-penalty R  > 0, 1 = off (default 1)
  --presence-penalty X    [-2, 2] (default 0)
  --frequency-penalty X   [-2, 2] (default 0)
  --seed S                seed for reproducible sampling (default: random)
  --ignore-eos            keep generating past end-of-generation tokens
  --batching MODE         continuous (default) or static: the baseline where a batch runs until its
                          longest member finishes before the next batch starts
  --max-num-seqs N        sequences running together at most (default 64)
  --device D              auto (default: cuda when this build has it and a GPU is present), cpu or cuda
  --threads N             CPU threads (default: all cores)
  --kv-cache-mb N         CPU KV cache memory (default 256)
  --gpu-memory-fraction F CUDA: share of GPU memory to use, KV cache included (default 0.9)
  --no-cuda-graphs        CUDA: run decode steps without CUDA graphs
  --block-size N          tokens per KV block (default 16)
  --verbose               print the backend configuration
)";

struct generate_options {
  std::string model = INFLIGHT_DEFAULT_MODEL;
  std::vector<std::string> prompts;
  bool chat = false;
  std::optional<std::string> system;
  int32_t max_tokens = 256;
  std::vector<std::string> stop;
  std::optional<int64_t> timeout_ms;
  sampling_params sampling;
  bool ignore_eos = false;
  bool static_batching = false;
  int32_t max_num_seqs = 64;
  backend_choice backend;
  bool verbose = false;
};

generate_options parse(int argc, char** argv) {
  generate_options options;
  options.backend.kv_cache_mb = 256;
  options.sampling.temperature = 0.8f;
  options.sampling.top_k = 40;
  options.sampling.top_p = 0.95f;
  options.sampling.min_p = 0.05f;
  option_reader reader(argc, argv);
  while (!reader.done()) {
    const std::string name = reader.next_name();
    if (name == "model") options.model = reader.string_value();
    else if (name == "prompt") options.prompts.push_back(reader.string_value());
    else if (name == "chat") { reader.flag(); options.chat = true; }
    else if (name == "system") options.system = reader.string_value();
    else if (name == "max-tokens") options.max_tokens = int32_t(reader.int_value(1, 1 << 20));
    else if (name == "stop") {
      options.stop.push_back(reader.string_value());
      if (options.stop.back().empty()) throw usage_error("--stop: the stop string is empty");
    }
    else if (name == "timeout-ms") options.timeout_ms = reader.int_value(1, INT64_MAX / 1000000);
    else if (name == "temperature") options.sampling.temperature = float(reader.float_value());
    else if (name == "top-k") options.sampling.top_k = int32_t(reader.int_value(-1, 1 << 30));
    else if (name == "top-p") options.sampling.top_p = float(reader.float_value());
    else if (name == "min-p") options.sampling.min_p = float(reader.float_value());
    else if (name == "repetition-penalty") options.sampling.repetition_penalty = float(reader.float_value());
    else if (name == "presence-penalty") options.sampling.presence_penalty = float(reader.float_value());
    else if (name == "frequency-penalty") options.sampling.frequency_penalty = float(reader.float_value());
    else if (name == "seed") options.sampling.seed = uint64_t(reader.int_value(0, INT64_MAX));
    else if (name == "ignore-eos") { reader.flag(); options.ignore_eos = true; }
    else if (name == "batching") {
      const std::string mode = reader.string_value();
      if (mode != "static" && mode != "continuous")
        throw usage_error("--batching: expected 'continuous' or 'static', got '" + mode + "'");
      options.static_batching = mode == "static";
    }
    else if (name == "max-num-seqs") options.max_num_seqs = int32_t(reader.int_value(1, 4096));
    else if (name == "threads") options.backend.threads = int(reader.int_value(1, 1024));
    else if (name == "kv-cache-mb") options.backend.kv_cache_mb = reader.int_value(1, 1 << 20);
    else if (name == "block-size") options.backend.block_size = int32_t(reader.int_value(1, 1024));
    else if (name == "device") options.backend.device = reader.string_value();
    else if (name == "gpu-memory-fraction") {
      options.backend.gpu_memory_fraction = reader.float_value();
      if (!(options.backend.gpu_memory_fraction > 0 && options.backend.gpu_memory_fraction <= 1))
        throw usage_error("--gpu-memory-fraction: must be in (0, 1]");
    }
    else if (name == "no-cuda-graphs") { reader.flag(); options.backend.cuda_graphs = false; }
    else if (name == "verbose") { reader.flag(); options.verbose = true; }
    else throw usage_error("unknown option --" + name);
  }
  if (options.prompts.empty()) throw usage_error("--prompt is required");
  if (const char* error = validate(options.sampling); *error) throw usage_error(error);
  return options;
}

// The prompt from standard input, without the one trailing newline that `echo` or a file adds.
std::string read_stdin() {
  std::string text;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0;) text.append(buffer, n);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

using clock = std::chrono::steady_clock;

// One request's output. Called from the engine's threads, one at a time per request; the main thread
// reads the results after wait_idle(), which orders it after the final event.
class cli_sink final : public generation_sink {
 public:
  cli_sink(size_t index, bool stream) : index_(index), stream_(stream) {}

  void on_delta(const generation_delta& delta) override {
    if (delta.token >= 0 && !first_token_) first_token_ = clock::now();
    if (stream_ && !delta.text.empty()) {
      std::fwrite(delta.text.data(), 1, delta.text.size(), stdout);
      std::fflush(stdout);
    }
  }

  void on_final(const generation_final& final_event) override {
    final_ = final_event;
    finished_at_ = clock::now();
    if (stream_) {
      std::fputc('\n', stdout);
    } else if (final_event.error == request_error::none) {
      std::printf("[%zu] %s\n", index_, final_event.text.c_str());
    }
    std::fflush(stdout);
  }

  const generation_final& result() const { return final_; }
  std::optional<clock::time_point> first_token() const { return first_token_; }
  clock::time_point finished_at() const { return finished_at_; }

 private:
  size_t index_;
  bool stream_;
  std::optional<clock::time_point> first_token_;
  clock::time_point finished_at_;
  generation_final final_;
};

double seconds_between(clock::time_point from, clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

int generate(const generate_options& options) {
  auto file = gguf::gguf_file::open(options.model);
  auto tok = tokenizer::from_gguf(*file);
  chat_template chat = chat_template::from_gguf(*file);
  if (options.chat && !chat.recognized()) std::fprintf(stderr, "inflight generate: warning: %s\n", chat.warning().c_str());

  std::vector<generation_params> requests;
  std::optional<std::string> stdin_text;  // read once, however many times '-' is given
  for (const std::string& prompt : options.prompts) {
    generation_params params;
    if (prompt == "-" && !stdin_text) stdin_text = read_stdin();
    const std::string text = prompt == "-" ? *stdin_text : prompt;
    if (options.chat) {
      if (options.system) params.messages.push_back({"system", *options.system});
      params.messages.push_back({"user", text});
    } else {
      params.prompt = text;
    }
    params.sampling = options.sampling;
    params.max_tokens = options.max_tokens;
    params.stop = options.stop;
    params.ignore_eos = options.ignore_eos;
    if (options.timeout_ms) params.timeout = std::chrono::milliseconds(*options.timeout_ms);
    requests.push_back(std::move(params));
  }

  backend_choice backend = options.backend;
  backend.max_step_sequences = std::min<int32_t>(options.max_num_seqs, int32_t(requests.size()));
  auto model = load_backend("inflight generate", file, options.model, backend);
  if (options.verbose) std::fprintf(stderr, "%s: %s\n", model->config().name.c_str(), model->describe().c_str());

  engine_options engine_config;
  engine_config.max_num_seqs = backend.max_step_sequences;
  engine_config.static_batching = options.static_batching;
  auto engine = inference_engine::create(std::move(model), tok, std::move(chat), engine_config);

  const bool stream = requests.size() == 1;
  std::vector<std::shared_ptr<cli_sink>> sinks;
  const auto start = clock::now();
  for (size_t i = 0; i < requests.size(); ++i) {
    sinks.push_back(std::make_shared<cli_sink>(i, stream));
    engine->submit(std::move(requests[i]), sinks.back());
  }
  engine->wait_idle();
  const auto end = clock::now();
  if (options.verbose) {
    const engine_stats stats = engine->stats();
    std::fprintf(stderr,
                 "engine: %lld steps, %lld preemptions | KV blocks: %d used, %d cached, %d free of %d | prefix cache "
                 "hits: %lld of %lld prompt tokens | %.1f%% of the busy loop in the forward pass\n",
                 static_cast<long long>(stats.steps), static_cast<long long>(stats.preemptions), stats.kv_blocks_used,
                 stats.kv_blocks_cached, stats.kv_blocks_free, stats.kv_blocks_total,
                 static_cast<long long>(stats.prefix_hit_tokens), static_cast<long long>(stats.prefix_queried_tokens),
                 100.0 * (1.0 - stats.overhead_share()));
  }

  int rc = 0;
  int64_t total_generated = 0;
  for (const auto& sink : sinks) {
    const generation_final& result = sink->result();
    total_generated += result.completion_tokens;
    if (result.error != request_error::none) {
      std::fprintf(stderr, "inflight generate: %s\n", result.message.c_str());
      rc = result.error == request_error::invalid_request || result.error == request_error::queue_full ? 2 : 1;
    }
  }
  if (stream && rc == 0) {
    // The first token comes out of the prefill step, so decode speed counts the rest.
    const cli_sink& sink = *sinks[0];
    const generation_final& result = sink.result();
    const double prefill = sink.first_token() ? seconds_between(start, *sink.first_token()) : 0.0;
    const double decode = sink.first_token() ? seconds_between(*sink.first_token(), sink.finished_at()) : 0.0;
    std::fprintf(stderr, "prompt: %d tokens, %.1f tokens/s | generation: %d tokens, %.1f tokens/s | finish: %s\n",
                 result.prompt_tokens, prefill > 0 ? result.prompt_tokens / prefill : 0.0, result.completion_tokens,
                 decode > 0 && result.completion_tokens > 1 ? (result.completion_tokens - 1) / decode : 0.0,
                 engine::to_string(result.reason));
  } else if (rc == 0) {
    std::fprintf(stderr, "%zu requests (%s batching): %lld tokens in %.2f s, %.1f tokens/s\n", sinks.size(),
                 options.static_batching ? "static" : "continuous", static_cast<long long>(total_generated),
                 seconds_between(start, end), double(total_generated) / seconds_between(start, end));
  }
  return rc;
}

}  // namespace

int run_generate(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(generate_help, stdout);
      return 0;
    }
  }
  try {
    const generate_options options = parse(argc, argv);
    return generate(options);
  } catch (const usage_error& error) {
    std::fprintf(stderr, "inflight generate: %s\n(see inflight generate --help)\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "inflight generate: %s\n", error.what());
    return 1;
  }
}

}  // namespace inflight::cli
