// `inflight generate`: load a GGUF model, run one prompt, stream the answer to stdout, and print prompt
// and generation speed to stderr.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli_commands.hpp"
#include "cli_options.hpp"
#include "inflight/batch_generator.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/detokenizer.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::cli {

namespace {

constexpr const char* generate_help = R"(usage: inflight generate --prompt TEXT [options]

Runs the model on TEXT and streams the answer to stdout; speeds go to stderr.

  --model PATH            GGUF model (default: the model fetched by tools/setup.sh)
  --prompt TEXT           the prompt ('-' reads it from standard input)
  --chat                  wrap the prompt as a user message in the model's chat template
  --system TEXT           system message for --chat (default: the template's own)
  --max-tokens N          tokens to generate at most (default 256)
  --temperature T         0 = greedy (default 0.8)
  --top-k K               keep the K most likely tokens, 0 = off (default 40)
  --top-p P               nucleus sampling mass in (0, 1] (default 0.95)
  --min-p P               drop tokens below P x the top probability (default 0.05)
  --repetition-penalty R  > 0, 1 = off (default 1)
  --presence-penalty X    [-2, 2] (default 0)
  --frequency-penalty X   [-2, 2] (default 0)
  --seed S                seed for reproducible sampling (default: random)
  --ignore-eos            keep generating past end-of-generation tokens
  --threads N             CPU threads (default: all cores)
  --kv-cache-mb N         KV cache memory (default: what prompt + max tokens need)
  --block-size N          tokens per KV block (default 16)
  --verbose               print the backend configuration and prompt token count
)";

struct generate_options {
  std::string model = INFLIGHT_DEFAULT_MODEL;
  std::optional<std::string> prompt;
  bool chat = false;
  std::optional<std::string> system;
  int32_t max_tokens = 256;
  sampling_params sampling;
  bool ignore_eos = false;
  int threads = 0;
  std::optional<int64_t> kv_cache_mb;  // default: what the request needs
  int32_t block_size = 16;
  bool verbose = false;
};

generate_options parse(int argc, char** argv) {
  generate_options options;
  options.sampling.temperature = 0.8f;
  options.sampling.top_k = 40;
  options.sampling.top_p = 0.95f;
  options.sampling.min_p = 0.05f;
  option_reader reader(argc, argv);
  while (!reader.done()) {
    const std::string name = reader.next_name();
    if (name == "model") options.model = reader.string_value();
    else if (name == "prompt") options.prompt = reader.string_value();
    else if (name == "chat") { reader.flag(); options.chat = true; }
    else if (name == "system") options.system = reader.string_value();
    else if (name == "max-tokens") options.max_tokens = int32_t(reader.int_value(1, 1 << 20));
    else if (name == "temperature") options.sampling.temperature = float(reader.float_value());
    else if (name == "top-k") options.sampling.top_k = int32_t(reader.int_value(-1, 1 << 30));
    else if (name == "top-p") options.sampling.top_p = float(reader.float_value());
    else if (name == "min-p") options.sampling.min_p = float(reader.float_value());
    else if (name == "repetition-penalty") options.sampling.repetition_penalty = float(reader.float_value());
    else if (name == "presence-penalty") options.sampling.presence_penalty = float(reader.float_value());
    else if (name == "frequency-penalty") options.sampling.frequency_penalty = float(reader.float_value());
    else if (name == "seed") options.sampling.seed = uint64_t(reader.int_value(0, INT64_MAX));
    else if (name == "ignore-eos") { reader.flag(); options.ignore_eos = true; }
    else if (name == "threads") options.threads = int(reader.int_value(1, 1024));
    else if (name == "kv-cache-mb") options.kv_cache_mb = reader.int_value(1, 1 << 20);
    else if (name == "block-size") options.block_size = int32_t(reader.int_value(1, 1024));
    else if (name == "verbose") { reader.flag(); options.verbose = true; }
    else throw usage_error("unknown option --" + name);
  }
  if (!options.prompt) throw usage_error("--prompt is required");
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

// A progress bar on stderr while the weights load, only when a person is watching.
void draw_progress(int done, int total, void*) {
  constexpr int width = 30;
  const int filled = done * width / total;
  std::fprintf(stderr, "\rloading [%.*s%*s] %d/%d layers", filled, "##############################", width - filled,
               "", done, total);
  if (done == total) std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

int generate(const generate_options& options) {
  auto file = gguf::gguf_file::open(options.model);
  auto tok = tokenizer::from_gguf(*file);

  std::string prompt_text = *options.prompt == "-" ? read_stdin() : *options.prompt;
  if (options.chat) {
    const chat_template chat = chat_template::from_gguf(*file);
    if (!chat.recognized()) std::fprintf(stderr, "inflight generate: warning: %s\n", chat.warning().c_str());
    std::vector<chat_message> messages;
    if (options.system) messages.push_back({"system", *options.system});
    messages.push_back({"user", prompt_text});
    prompt_text = chat.render(messages, /*add_generation_prompt=*/true);
  }

  // Tokenize before loading the weights: a bad prompt should fail at once.
  generation_request request;
  request.prompt = tok->encode(prompt_text, /*parse_special=*/true);
  request.sampling = options.sampling;
  request.max_tokens = options.max_tokens;
  request.ignore_eos = options.ignore_eos;
  if (request.prompt.empty()) throw usage_error("the prompt is empty");

  cpu_backend_options backend_options;
  backend_options.num_threads = options.threads;
  backend_options.block_size = options.block_size;
  backend_options.max_step_sequences = 1;
  if (options.kv_cache_mb) {
    backend_options.kv_cache_bytes = size_t(*options.kv_cache_mb) << 20;
  } else {  // one request: the cache it can ever use, no more
    const int64_t tokens = int64_t(request.prompt.size()) + options.max_tokens;
    backend_options.num_blocks = int32_t(std::min<int64_t>((tokens + options.block_size - 1) / options.block_size, 1 << 20));
  }
  if (isatty(STDERR_FILENO)) backend_options.on_load_progress = draw_progress;
  cpu_backend model(file, backend_options);

  if (options.verbose) {
    std::fprintf(stderr, "%s\n%s: %zu prompt tokens\n", model.describe().c_str(), model.config().name.c_str(),
                 request.prompt.size());
  }

  // Stream: text goes out as soon as it forms whole UTF-8 characters; end-of-generation tokens stay hidden.
  incremental_detokenizer detokenizer(tok, /*skip_special=*/true);
  std::string text;
  batch_generator generator(model, tok->end_of_generation_ids());
  const auto outputs = generator.run({&request, 1}, [&](size_t, int32_t token, const sample_result&) {
    text.clear();
    if (!tok->is_end_of_generation(token) || options.ignore_eos) detokenizer.push(token, text);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  text.clear();
  detokenizer.flush(text);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);

  const auto& stats = generator.stats();
  // The first generated token comes out of the prefill step, so decode speed counts the rest.
  const int64_t decoded = stats.generated_tokens - 1;
  std::fprintf(stderr, "prompt: %lld tokens, %.1f tokens/s | generation: %lld tokens, %.1f tokens/s | finish: %s\n",
               static_cast<long long>(stats.prompt_tokens),
               stats.prefill_seconds > 0 ? double(stats.prompt_tokens) / stats.prefill_seconds : 0.0,
               static_cast<long long>(stats.generated_tokens),
               stats.decode_seconds > 0 && decoded > 0 ? double(decoded) / stats.decode_seconds : 0.0,
               outputs[0].reason == finish_reason::stop ? "stop" : "length");
  return 0;
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
