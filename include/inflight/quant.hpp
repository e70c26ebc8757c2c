// Dequantization of GGUF tensor rows to float, one function for every supported ggml type.
#pragma once

#include <cstdint>

#include "inflight/ggml_type.hpp"

namespace inflight {

// Dequantizes `n` values (a multiple of the type's block size) from `src` into `dst`.
// Throws std::invalid_argument for an unsupported type or a bad n.
void dequantize_row(ggml_type type, const void* src, float* dst, int64_t n);

}  // namespace inflight
