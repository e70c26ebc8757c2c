// The CUDA backend's host-side weight preparation (gpu/bf16_weights.hpp), which runs on any machine: fused
// tensors stack the right GGUF rows, values are the dequantized weights rounded to bf16, the dummy weights
// have the shapes of a Hugging Face config, and RoPE's frequencies match the CPU backend's.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "bf16_weights.hpp"
#include "kv_budget.hpp"
#include "inflight/gguf.hpp"
#include "inflight/half.hpp"
#include "inflight/quant.hpp"

using namespace inflight;

namespace {

std::vector<float> dequantized_row(const gguf::gguf_file& file, const std::string& name, int64_t row) {
  const auto& tensor = file.tensor(name);
  std::vector<float> values(tensor.dims[0]);
  dequantize_row(tensor.type, tensor.data + size_t(row) * tensor.row_bytes(), values.data(), int64_t(values.size()));
  return values;
}

// Row `row` of a bf16 tensor equals the GGUF row, dequantized and rounded to bf16.
void check_row(const gpu::bf16_tensor& tensor, int64_t row, const std::vector<float>& expected) {
  REQUIRE(int64_t(expected.size()) == tensor.cols);
  for (int64_t col = 0; col < tensor.cols; ++col) {
    const uint16_t got = tensor.values[size_t(row * tensor.cols + col)];
    if (got != fp32_to_bf16(expected[size_t(col)])) {
      FAIL_CHECK(tensor.name << " row " << row << " col " << col);
      return;
    }
  }
}

}  // namespace

TEST_CASE("bf16 rounding is round-to-nearest-even and keeps NaN and infinities") {
  CHECK(fp32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_fp32(fp32_to_bf16(1.00390625f)) == 1.0f);       // halfway below an even mantissa: down
  CHECK(bf16_to_fp32(fp32_to_bf16(1.01171875f)) == 1.015625f);  // halfway below an odd mantissa: up
  CHECK(std::isnan(bf16_to_fp32(fp32_to_bf16(std::nanf("")))));
  CHECK(std::isinf(bf16_to_fp32(fp32_to_bf16(INFINITY))));
  CHECK(bf16_to_fp32(fp32_to_bf16(-2.5f)) == -2.5f);
}

TEST_CASE("the default model's weights: fused Q/K/V and gate/up rows in order, rounded to bf16") {
  REQUIRE_MESSAGE(std::filesystem::exists(INFLIGHT_DEFAULT_MODEL), "run tools/setup.sh to fetch the model");
  const auto file = gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL);
  const model_config config = model_config::from_gguf(*file);
  std::vector<std::string> names;
  std::map<std::string, std::pair<int64_t, int64_t>> shapes;
  gpu::for_each_bf16_weight(*file, config, [&](const gpu::bf16_tensor& t) {
    names.push_back(t.name);
    shapes[t.name] = {t.rows, t.cols};
    CHECK(int64_t(t.values.size()) == t.rows * t.cols);
    if (t.name == "blk.3.attn_qkv") {
      // Q rows, then K rows, then V rows.
      check_row(t, 0, dequantized_row(*file, "blk.3.attn_q.weight", 0));
      check_row(t, config.q_size() - 1, dequantized_row(*file, "blk.3.attn_q.weight", config.q_size() - 1));
      check_row(t, config.q_size(), dequantized_row(*file, "blk.3.attn_k.weight", 0));
      check_row(t, config.q_size() + config.kv_size() + 5, dequantized_row(*file, "blk.3.attn_v.weight", 5));
    } else if (t.name == "blk.0.ffn_gate_up") {
      check_row(t, 7, dequantized_row(*file, "blk.0.ffn_gate.weight", 7));
      check_row(t, config.ffn_size + 7, dequantized_row(*file, "blk.0.ffn_up.weight", 7));
    } else if (t.name == "output_norm") {
      check_row(t, 0, dequantized_row(*file, "output_norm.weight", 0));
    } else if (t.name == "token_embd") {
      check_row(t, 1234, dequantized_row(*file, "token_embd.weight", 1234));
    }
  });
  // 1 embedding + 6 per layer + the final norm; SmolLM2 ties its LM head to the embedding: no "output".
  CHECK(names.size() == size_t(1 + 6 * config.num_layers + 1));
  CHECK(names.front() == "token_embd");
  CHECK(names.back() == "output_norm");
  CHECK(shapes["blk.0.attn_qkv"] == std::pair<int64_t, int64_t>(config.q_size() + 2 * config.kv_size(), config.hidden_size));
  CHECK(shapes["blk.29.ffn_down"] == std::pair<int64_t, int64_t>(config.hidden_size, config.ffn_size));
  CHECK(shapes["blk.29.attn_output"] == std::pair<int64_t, int64_t>(config.hidden_size, config.q_size()));
}

TEST_CASE("a Hugging Face config gives the model shape; dummy weights have it and are reproducible") {
  const model_config config = gpu::model_config_from_hf_json(std::string(INFLIGHT_SOURCE_DIR) + "/config/smollm2-135m.json");
  CHECK(config.hidden_size == 576);
  CHECK(config.num_layers == 30);
  CHECK(config.num_heads == 9);
  CHECK(config.num_kv_heads == 3);
  CHECK(config.head_dim == 64);
  CHECK(config.vocab_size == 49152);
  CHECK(config.rope_freq_base == 100000.0f);
  CHECK(config.tied_embeddings);
  const model_config big = gpu::model_config_from_hf_json(std::string(INFLIGHT_SOURCE_DIR) + "/config/llama-3.1-8b.json");
  CHECK(big.hidden_size == 4096);
  CHECK(big.ffn_size == 14336);
  CHECK(big.num_heads == 32);
  CHECK(big.num_kv_heads == 8);
  CHECK(big.head_dim == 128);
  CHECK(big.vocab_size == 128256);
  CHECK_FALSE(big.tied_embeddings);

  model_config small = config;
  small.num_layers = 2;
  small.vocab_size = 300;
  auto collect = [&](uint64_t seed) {
    std::vector<gpu::bf16_tensor> tensors;
    gpu::for_each_dummy_weight(small, seed, [&](const gpu::bf16_tensor& t) { tensors.push_back(t); });
    return tensors;
  };
  const auto first = collect(7), again = collect(7), other = collect(8);
  REQUIRE(first.size() == 1 + 6 * 2 + 1);
  CHECK(first[2].name == "blk.0.attn_qkv");
  CHECK(first[2].rows == small.q_size() + 2 * small.kv_size());
  CHECK(first[1].values[0] == fp32_to_bf16(1.0f));  // a norm
  CHECK(first[2].values == again[2].values);
  CHECK(first[2].values != other[2].values);
  double sum_squares = 0;
  for (const uint16_t v : first[2].values) sum_squares += double(bf16_to_fp32(v)) * bf16_to_fp32(v);
  CHECK(std::sqrt(sum_squares / double(first[2].values.size())) == doctest::Approx(0.02).epsilon(0.05));

  // Errors name the file and the field.
  const std::string broken = std::filesystem::temp_directory_path() / "inflight-broken-config.json";
  std::ofstream(broken) << R"({"hidden_size": 64, "intermediate_size": "big"})";
  CHECK_THROWS_WITH_AS(gpu::model_config_from_hf_json(broken), doctest::Contains("'intermediate_size' must be a positive integer"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(gpu::model_config_from_hf_json(broken + ".missing"), doctest::Contains("cannot read"), std::runtime_error);
}

TEST_CASE("RoPE inverse frequencies are the CPU backend's angles per unit position") {
  model_config config;
  config.rope_dims = 64;
  config.rope_freq_base = 500000.0f;
  config.rope_freq_scale = 0.5f;
  std::vector<float> factors(32);
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + float(i) / 8;
  const std::vector<float> inverse = gpu::rope_inverse_frequencies(config, factors);
  REQUIRE(inverse.size() == 32);
  for (size_t i = 0; i < inverse.size(); ++i) {
    const double expected = 0.5 * std::pow(500000.0, -2.0 * double(i) / 64.0) / factors[i];
    CHECK(inverse[i] == doctest::Approx(expected).epsilon(1e-5));
  }
  CHECK_THROWS_AS(gpu::rope_inverse_frequencies(config, std::vector<float>(3)), std::invalid_argument);
}

TEST_CASE("the KV cache gets what the memory fraction leaves after everything else") {
  const size_t gib = size_t(1) << 30, block = size_t(2) << 20;  // a 2 MiB block
  // 80 GiB device, 20 GiB in use, fraction 0.9: 72 - 20 = 52 GiB -> 26,624 blocks.
  CHECK(gpu::kv_blocks_for_memory(80 * gib, 60 * gib, 0.9, block) == 26624);
  CHECK(gpu::kv_blocks_for_memory(80 * gib, 60 * gib, 1.0, block) == 30720);
  CHECK_THROWS_WITH_AS(gpu::kv_blocks_for_memory(80 * gib, 10 * gib, 0.8, block), doctest::Contains("no room for the KV cache"),
                       std::invalid_argument);
  CHECK_THROWS_AS(gpu::kv_blocks_for_memory(80 * gib, 60 * gib, 0.0, block), std::invalid_argument);
  CHECK_THROWS_AS(gpu::kv_blocks_for_memory(80 * gib, 60 * gib, 1.5, block), std::invalid_argument);
}
