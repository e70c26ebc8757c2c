// The ggml tensor types inflight reads, with their GGUF ids, and the block geometry of each.
#pragma once

#include <cstddef>
#include <cstdint>

namespace inflight {

enum class ggml_type : uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15, bf16 = 30,
};

struct ggml_type_traits {
  const char* name;
  size_t block_elements;  // values per block (1 for plain float types)
  size_t block_bytes;     // bytes per block
};

// Null for types inflight cannot read (the caller reports "unsupported tensor type").
const ggml_type_traits* find_type_traits(uint32_t type_id);
const ggml_type_traits& type_traits(ggml_type type);

// Bytes taken by `n` values of `type`; n must be a multiple of the block size.
size_t row_bytes(ggml_type type, size_t n);

}  // namespace inflight
