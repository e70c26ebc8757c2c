// Block geometry of the ggml types inflight reads. Sizes follow ggml-common.h; the static_asserts in
// quant_blocks.hpp pin the struct layouts to the same numbers.
#include "inflight/ggml_type.hpp"

#include <stdexcept>
#include <string>

#include "quant_blocks.hpp"

namespace inflight {
namespace {

struct type_entry {
  ggml_type type;
  ggml_type_traits traits;
};

// Names are ggml's spellings (q4_K with a capital K) so output lines up with llama.cpp's tools.
constexpr type_entry k_types[] = {
    {ggml_type::f32, {"f32", 1, 4}},
    {ggml_type::f16, {"f16", 1, 2}},
    {ggml_type::bf16, {"bf16", 1, 2}},
    {ggml_type::q4_0, {"q4_0", quant::qk4_0, sizeof(quant::block_q4_0)}},
    {ggml_type::q4_1, {"q4_1", quant::qk4_1, sizeof(quant::block_q4_1)}},
    {ggml_type::q5_0, {"q5_0", quant::qk5_0, sizeof(quant::block_q5_0)}},
    {ggml_type::q5_1, {"q5_1", quant::qk5_1, sizeof(quant::block_q5_1)}},
    {ggml_type::q8_0, {"q8_0", quant::qk8_0, sizeof(quant::block_q8_0)}},
    {ggml_type::q8_1, {"q8_1", quant::qk8_1, sizeof(quant::block_q8_1)}},
    {ggml_type::q4_k, {"q4_K", quant::qk_k, sizeof(quant::block_q4_k)}},
    {ggml_type::q5_k, {"q5_K", quant::qk_k, sizeof(quant::block_q5_k)}},
    {ggml_type::q6_k, {"q6_K", quant::qk_k, sizeof(quant::block_q6_k)}},
    // block_q8_K: float d, int8 qs[256], int16 bsums[16] (no struct here: only its size is needed).
    {ggml_type::q8_k, {"q8_K", quant::qk_k, 4 + 256 + 2 * 16}},
};

static_assert(4 + 256 + 2 * 16 == 292);

}  // namespace

const ggml_type_traits* find_type_traits(uint32_t type_id) {
  for (const auto& entry : k_types) {
    if (static_cast<uint32_t>(entry.type) == type_id) return &entry.traits;
  }
  return nullptr;
}

const ggml_type_traits& type_traits(ggml_type type) {
  const ggml_type_traits* traits = find_type_traits(static_cast<uint32_t>(type));
  if (traits == nullptr) {
    throw std::invalid_argument("unknown ggml type id " + std::to_string(static_cast<uint32_t>(type)));
  }
  return *traits;
}

size_t row_bytes(ggml_type type, size_t n) {
  const ggml_type_traits& traits = type_traits(type);
  if (n % traits.block_elements != 0) {
    throw std::invalid_argument(std::to_string(n) + " values of type " + traits.name +
                                " is not a multiple of its block size " +
                                std::to_string(traits.block_elements));
  }
  return n / traits.block_elements * traits.block_bytes;
}

}  // namespace inflight
