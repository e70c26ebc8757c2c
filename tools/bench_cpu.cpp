// CPU backend benchmark (not a test): prefill, single-stream decode and batched decode throughput.
//
//   build/tools/bench_cpu [--model PATH] [--threads N] [--json PATH]
//
// The workloads are defined exactly as in tools/bench_llama_cpp.py so that tools/bench_compare.sh can
// put both engines side by side in one run:
//   token ids        ids[i] = 100 + (i * 7919 + 13) % 49000   (sequence s adds 1000 * s to i)
//   prefill          one 512-token prompt in one step; best of 3 runs
//   single decode    a 32-token prompt, then 128 steps of one (fixed) token each
//   batched decode   B sequences with 32-token prompts (prefill not timed), then 64 steps that each
//                    decode one token for every sequence; tokens/s = B * 64 / seconds
// Logits are computed for every decoded token, as a server sampling every sequence would.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "atomic_file.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/gguf.hpp"

using namespace inflight;

namespace {

constexpr int32_t prefill_length = 512;
constexpr int32_t prompt_length = 32;
constexpr int32_t single_decode_steps = 128;
constexpr int32_t batched_decode_steps = 64;
constexpr int batch_sizes[] = {1, 4, 16, 64};

int32_t token_at(int64_t i) { return int32_t(100 + (i * 7919 + 13) % 49000); }

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct sequence {
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;
  int32_t computed = 0;
};

// B sequences: prefill their prompts (untimed), then `steps` batched decode steps (timed).
double batched_decode_tokens_per_second(cpu_backend& model, int batch, int32_t steps) {
  const int32_t block_size = model.kv_geometry().block_size;
  const int32_t blocks_per_sequence = (prompt_length + steps + block_size - 1) / block_size;
  std::vector<sequence> sequences(static_cast<size_t>(batch));
  for (int s = 0; s < batch; ++s) {
    for (int32_t i = 0; i < prompt_length + steps; ++i) sequences[size_t(s)].tokens.push_back(token_at(1000 * s + i));
    for (int32_t b = 0; b < blocks_per_sequence; ++b) sequences[size_t(s)].blocks.push_back(s * blocks_per_sequence + b);
  }
  std::vector<float> logits(size_t(batch) * size_t(model.config().vocab_size));
  std::vector<sequence_chunk> chunks(static_cast<size_t>(batch));
  for (int s = 0; s < batch; ++s) {  // prefill one sequence at a time
    auto& seq = sequences[size_t(s)];
    sequence_chunk chunk{std::span<const int32_t>(seq.tokens).first(prompt_length), 0, seq.blocks, true};
    model.forward({&chunk, 1}, logits);
    seq.computed = prompt_length;
  }
  const auto start = std::chrono::steady_clock::now();
  for (int32_t step = 0; step < steps; ++step) {
    for (int s = 0; s < batch; ++s) {
      auto& seq = sequences[size_t(s)];
      chunks[size_t(s)] = {std::span<const int32_t>(seq.tokens).subspan(size_t(seq.computed), 1), seq.computed,
                           seq.blocks, true};
      ++seq.computed;
    }
    model.forward(chunks, logits);
  }
  return double(batch) * steps / seconds_since(start);
}

double prefill_tokens_per_second(cpu_backend& model) {
  std::vector<int32_t> tokens(prefill_length);
  for (int32_t i = 0; i < prefill_length; ++i) tokens[size_t(i)] = token_at(i);
  std::vector<int32_t> blocks(size_t(prefill_length / model.kv_geometry().block_size + 1));
  for (size_t b = 0; b < blocks.size(); ++b) blocks[b] = int32_t(b);
  std::vector<float> logits(size_t(model.config().vocab_size));
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    sequence_chunk chunk{tokens, 0, blocks, true};
    const auto start = std::chrono::steady_clock::now();
    model.forward({&chunk, 1}, logits);
    best = std::max(best, prefill_length / seconds_since(start));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = INFLIGHT_DEFAULT_MODEL, json_path;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) model_path = argv[++i];
    else if (arg == "--threads" && i + 1 < argc) {
      char* end = nullptr;
      threads = int(std::strtol(argv[++i], &end, 10));
      if (*end != '\0') threads = -1;  // reported below
    }
    else if (arg == "--json" && i + 1 < argc) json_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_cpu [--model PATH] [--threads N] [--json PATH]\n");
      return 2;
    }
  }
  if (threads < 0 || threads > 1024) {
    std::fprintf(stderr, "bench_cpu: --threads must be in [0, 1024] (0: all CPUs)\n");
    return 2;
  }
  try {
    cpu_backend_options options;
    options.num_threads = threads;
    options.max_step_tokens = prefill_length;
    options.max_step_sequences = 64;
    options.num_blocks = 64 * ((prompt_length + single_decode_steps) / options.block_size + 1);
    cpu_backend model(gguf::gguf_file::open(model_path), options);
    std::printf("%s\nmodel: %s\n\n", model.describe().c_str(), model_path.c_str());

    const double prefill = prefill_tokens_per_second(model);
    const double single = batched_decode_tokens_per_second(model, 1, single_decode_steps);
    std::vector<double> batched;
    for (int batch : batch_sizes) batched.push_back(batched_decode_tokens_per_second(model, batch, batched_decode_steps));

    std::printf("| workload                         | tokens/s |\n|----------------------------------|---------:|\n");
    std::printf("| prefill (512-token prompt)       | %8.1f |\n", prefill);
    std::printf("| single-stream decode (128 steps) | %8.1f |\n", single);
    for (size_t i = 0; i < batched.size(); ++i) {
      std::printf("| batched decode, batch %-3d        | %8.1f |\n", batch_sizes[i], batched[i]);
    }
    if (!json_path.empty()) {
      std::ostringstream json;
      json << "{\"engine\": \"inflight\", \"threads\": " << model.num_threads() << ", \"prefill_tokens_per_s\": "
           << prefill << ", \"decode_tokens_per_s\": " << single << ", \"batched\": {";
      for (size_t i = 0; i < batched.size(); ++i) {
        json << (i ? ", " : "") << '"' << batch_sizes[i] << "\": " << batched[i];
      }
      json << "}}\n";
      cli::write_file_atomically(json_path, json.str());
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_cpu: %s\n", error.what());
    return 1;
  }
  return 0;
}
