// dequantize_row against hand-built blocks, then against raw bytes of the real model when present.
// Each expected value is computed here from the layout as ggml-common.h describes it (written
// independently of model/dequantize.cpp's loops), and scales are chosen so every product is exact in
// float: the comparisons are exact whatever the evaluation order.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "inflight/ggml_type.hpp"
#include "inflight/gguf.hpp"
#include "inflight/half.hpp"
#include "inflight/quant.hpp"
#include "quant_blocks.hpp"

using namespace inflight;
using namespace inflight::quant;

namespace {

// fp16 bit patterns, written out by hand so the tests do not depend on fp32_to_fp16.
constexpr uint16_t h_one = 0x3c00;            //  1.0
constexpr uint16_t h_half = 0x3800;           //  0.5
constexpr uint16_t h_quarter = 0x3400;        //  0.25
constexpr uint16_t h_minus_1_5 = 0xbe00;      // -1.5
constexpr uint16_t h_minus_2 = 0xc000;        // -2.0
constexpr uint16_t h_minus_eighth = 0xb000;   // -0.125
constexpr uint16_t h_three = 0x4200;          //  3.0

// Deterministic byte pattern that covers every nibble value.
std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t state = seed;
  for (auto& b : out) {
    state = state * 1664525u + 1013904223u;
    b = uint8_t(state >> 24);
  }
  return out;
}

template <class Block>
std::vector<float> run(ggml_type type, const std::vector<Block>& blocks, int64_t per_block) {
  std::vector<float> out(blocks.size() * per_block, -12345.0f);
  dequantize_row(type, blocks.data(), out.data(), int64_t(out.size()));
  return out;
}

// Packs eight 6-bit scales and mins the way Q4_K/Q5_K store them:
//   bytes 0-3 : sc[j]  | (sc[j+4] >> 4) << 6
//   bytes 4-7 : mn[j]  | (mn[j+4] >> 4) << 6
//   bytes 8-11: (sc[j+4] & 15) | (mn[j+4] & 15) << 4
std::array<uint8_t, 12> pack_k4_scales(const std::array<uint8_t, 8>& sc, const std::array<uint8_t, 8>& mn) {
  std::array<uint8_t, 12> out{};
  for (int j = 0; j < 4; ++j) {
    out[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
    out[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  return out;
}

// Sub-block scales with the high bits (>= 16) set for sub-blocks 4-7, so their split storage matters.
constexpr std::array<uint8_t, 8> k_sc = {1, 63, 17, 0, 42, 63, 16, 35};
constexpr std::array<uint8_t, 8> k_mn = {5, 0, 63, 33, 61, 18, 47, 2};

}  // namespace

TEST_CASE("f32 rows are copied bit for bit") {
  const std::vector<float> src = {1.5f, -0.0f, 3.0e-41f, -7.25f};
  std::vector<float> dst(4, 9.0f);
  dequantize_row(ggml_type::f32, src.data(), dst.data(), 4);
  for (size_t i = 0; i < src.size(); ++i) CHECK(std::memcmp(&src[i], &dst[i], 4) == 0);
}

TEST_CASE("f16 normals and subnormals and specials") {
  const std::vector<uint16_t> src = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x8001, 0x7bff, 0x3555, 0x8000, 0x7c00, 0x7e00};
  std::vector<float> dst(src.size());
  dequantize_row(ggml_type::f16, src.data(), dst.data(), int64_t(src.size()));
  CHECK(dst[0] == 1.0f);
  CHECK(dst[1] == -2.0f);
  CHECK(dst[2] == std::ldexp(1.0f, -24));            // smallest subnormal
  CHECK(dst[3] == std::ldexp(1023.0f, -24));         // largest subnormal
  CHECK(dst[4] == -std::ldexp(1.0f, -24));
  CHECK(dst[5] == 65504.0f);
  CHECK(dst[6] == 1365.0f / 4096.0f);                // 0x3555 = 1.0101010101b x 2^-2
  CHECK(dst[7] == 0.0f);
  CHECK(std::signbit(dst[7]));
  CHECK(std::isinf(dst[8]));
  CHECK(std::isnan(dst[9]));
}

TEST_CASE("bf16 is the top half of an f32") {
  const std::vector<uint16_t> src = {0x3f80, 0xc0a0, 0x4049, 0x0001, 0xff80};
  std::vector<float> dst(src.size());
  dequantize_row(ggml_type::bf16, src.data(), dst.data(), int64_t(src.size()));
  CHECK(dst[0] == 1.0f);
  CHECK(dst[1] == -5.0f);
  CHECK(dst[2] == 3.140625f);
  CHECK(dst[3] == std::ldexp(1.0f, -133));  // f32 subnormal
  CHECK(std::isinf(dst[4]));
  CHECK(dst[4] < 0);
}

TEST_CASE("q4_0 low nibbles first then high nibbles") {
  std::vector<block_q4_0> blocks(2);
  blocks[0].d = h_half;
  blocks[1].d = h_minus_1_5;  // negative scale
  const float d[2] = {0.5f, -1.5f};
  for (int b = 0; b < 2; ++b) {
    const auto bytes = pattern(16, 7 + b);
    std::memcpy(blocks[b].qs, bytes.data(), 16);
  }
  blocks[0].qs[0] = 0x0f;  // value 0 = (15-8)*0.5, value 16 = (0-8)*0.5
  const auto y = run(ggml_type::q4_0, blocks, 32);
  CHECK(y[0] == 3.5f);
  CHECK(y[16] == -4.0f);
  for (int b = 0; b < 2; ++b) {
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = blocks[b].qs[j % 16];
      const int q = j < 16 ? (byte & 15) : (byte >> 4);
      CHECK(y[b * 32 + j] == float(q - 8) * d[b]);
    }
  }
}

TEST_CASE("q4_1 applies scale and min") {
  std::vector<block_q4_1> blocks(2);
  blocks[0].d = h_quarter;
  blocks[0].m = h_minus_2;
  blocks[1].d = h_minus_eighth;
  blocks[1].m = h_three;
  const float d[2] = {0.25f, -0.125f}, m[2] = {-2.0f, 3.0f};
  for (int b = 0; b < 2; ++b) {
    const auto bytes = pattern(16, 21 + b);
    std::memcpy(blocks[b].qs, bytes.data(), 16);
  }
  blocks[0].qs[0] = 0xa3;
  const auto y = run(ggml_type::q4_1, blocks, 32);
  CHECK(y[0] == -1.25f);  // 3*0.25 - 2
  CHECK(y[16] == 0.5f);   // 10*0.25 - 2
  for (int b = 0; b < 2; ++b) {
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = blocks[b].qs[j % 16];
      const int q = j < 16 ? (byte & 15) : (byte >> 4);
      CHECK(y[b * 32 + j] == float(q) * d[b] + m[b]);
    }
  }
}

TEST_CASE("q5_0 takes the fifth bit of value j from bit j of qh") {
  std::vector<block_q5_0> blocks(2);
  blocks[0].d = h_half;
  blocks[1].d = h_minus_1_5;
  const float d[2] = {0.5f, -1.5f};
  const uint32_t qh[2] = {0xa5f00f5bu, 0x80000001u};
  for (int b = 0; b < 2; ++b) {
    const auto bytes = pattern(16, 33 + b);
    std::memcpy(blocks[b].qs, bytes.data(), 16);
    for (int k = 0; k < 4; ++k) blocks[b].qh[k] = uint8_t(qh[b] >> (8 * k));  // little-endian
  }
  blocks[1].qs[0] = 0x53;
  blocks[1].qs[15] = 0xc0;
  const auto y = run(ggml_type::q5_0, blocks, 32);
  CHECK(y[32 + 0] == float((16 + 3) - 16) * -1.5f);    // qh bit 0 set
  CHECK(y[32 + 16] == float(5 - 16) * -1.5f);          // qh bit 16 clear
  CHECK(y[32 + 31] == float((16 + 12) - 16) * -1.5f);  // qh bit 31 set, high nibble of qs[15]
  for (int b = 0; b < 2; ++b) {
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = blocks[b].qs[j % 16];
      const int nibble = j < 16 ? (byte & 15) : (byte >> 4);
      const int q = nibble | int((qh[b] >> j) & 1) << 4;
      CHECK(y[b * 32 + j] == float(q - 16) * d[b]);
    }
  }
}

TEST_CASE("q5_1 applies the fifth bit then scale and min") {
  std::vector<block_q5_1> blocks(2);
  blocks[0].d = h_quarter;
  blocks[0].m = h_minus_2;
  blocks[1].d = h_minus_eighth;
  blocks[1].m = h_one;
  const float d[2] = {0.25f, -0.125f}, m[2] = {-2.0f, 1.0f};
  const uint32_t qh[2] = {0x0000ffffu, 0x12345678u};
  for (int b = 0; b < 2; ++b) {
    const auto bytes = pattern(16, 45 + b);
    std::memcpy(blocks[b].qs, bytes.data(), 16);
    for (int k = 0; k < 4; ++k) blocks[b].qh[k] = uint8_t(qh[b] >> (8 * k));
  }
  blocks[0].qs[0] = 0xff;
  const auto y = run(ggml_type::q5_1, blocks, 32);
  CHECK(y[0] == 31 * 0.25f - 2.0f);   // all five bits set
  CHECK(y[16] == 15 * 0.25f - 2.0f);  // upper half of qh is clear in block 0
  for (int b = 0; b < 2; ++b) {
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = blocks[b].qs[j % 16];
      const int nibble = j < 16 ? (byte & 15) : (byte >> 4);
      const int q = nibble | int((qh[b] >> j) & 1) << 4;
      CHECK(y[b * 32 + j] == float(q) * d[b] + m[b]);
    }
  }
}

TEST_CASE("q8_0 signed bytes times scale") {
  std::vector<block_q8_0> blocks(2);
  blocks[0].d = h_minus_eighth;
  blocks[1].d = h_three;
  const float d[2] = {-0.125f, 3.0f};
  for (int b = 0; b < 2; ++b) {
    for (int j = 0; j < 32; ++j) blocks[b].qs[j] = int8_t(j * 8 - 128 + b);
  }
  const auto y = run(ggml_type::q8_0, blocks, 32);
  CHECK(y[0] == 16.0f);  // -128 * -0.125
  for (int b = 0; b < 2; ++b) {
    for (int j = 0; j < 32; ++j) CHECK(y[b * 32 + j] == float(blocks[b].qs[j]) * d[b]);
  }
}

TEST_CASE("q4_k scale packing for sub-blocks 0-3 and 4-7") {
  block_q4_k block{};
  block.d = h_half;
  block.dmin = h_quarter;
  const auto packed = pack_k4_scales(k_sc, k_mn);
  std::memcpy(block.scales, packed.data(), 12);
  const auto bytes = pattern(128, 57);
  std::memcpy(block.qs, bytes.data(), 128);
  block.qs[64] = 0x9c;  // group 2: value 128 (sub-block 4, low nibble), value 160 (sub-block 5, high)
  const auto y = run(ggml_type::q4_k, std::vector<block_q4_k>{block}, 256);
  CHECK(y[128] == 0.5f * 42 * 12 - 0.25f * 61);
  CHECK(y[160] == 0.5f * 63 * 9 - 0.25f * 18);
  // Value k: sub-block s = k/32 of group g = k/64; low nibbles for even s, high for odd.
  for (int k = 0; k < 256; ++k) {
    const int s = k / 32, g = k / 64, l = k % 32;
    const uint8_t byte = block.qs[32 * g + l];
    const int q = s % 2 == 0 ? (byte & 15) : (byte >> 4);
    CHECK(y[k] == 0.5f * k_sc[s] * q - 0.25f * k_mn[s]);
  }
}

TEST_CASE("q5_k fifth bit s of qh byte l") {
  block_q5_k block{};
  block.d = h_quarter;
  block.dmin = h_minus_eighth;  // a negative dmin adds the min back
  const auto packed = pack_k4_scales(k_sc, k_mn);
  std::memcpy(block.scales, packed.data(), 12);
  const auto bytes = pattern(128, 61);
  std::memcpy(block.qs, bytes.data(), 128);
  const auto high = pattern(32, 67);
  std::memcpy(block.qh, high.data(), 32);
  block.qh[3] = 0x80;   // only sub-block 7 of position 3 gets the 16
  block.qs[96 + 3] = 0x2f;
  const auto y = run(ggml_type::q5_k, std::vector<block_q5_k>{block}, 256);
  CHECK(y[224 + 3] == 0.25f * 35 * (2 + 16) + 0.125f * 2);  // sub-block 7: high nibble + 16
  CHECK(y[192 + 3] == 0.25f * 16 * 15 + 0.125f * 47);       // sub-block 6: no fifth bit
  for (int k = 0; k < 256; ++k) {
    const int s = k / 32, g = k / 64, l = k % 32;
    const uint8_t byte = block.qs[32 * g + l];
    const int q = (s % 2 == 0 ? (byte & 15) : (byte >> 4)) + 16 * ((block.qh[l] >> s) & 1);
    CHECK(y[k] == 0.25f * k_sc[s] * q - (-0.125f) * k_mn[s]);
  }
}

TEST_CASE("q6_k ql and qh split with signed scales") {
  std::vector<block_q6_k> blocks(2);
  const float d[2] = {0.5f, -1.5f};
  blocks[0].d = h_half;
  blocks[1].d = h_minus_1_5;
  for (int b = 0; b < 2; ++b) {
    const auto low = pattern(128, 71 + b), high = pattern(64, 73 + b), sc = pattern(16, 79 + b);
    std::memcpy(blocks[b].ql, low.data(), 128);
    std::memcpy(blocks[b].qh, high.data(), 64);
    std::memcpy(blocks[b].scales, sc.data(), 16);
  }
  blocks[0].scales[0] = -128;
  blocks[0].scales[15] = 127;
  // Value 200 = half 1, quarter 2 (high nibble of ql[64+8]), bits 4-5 of qh[32+8]; scale 200/16 = 12.
  blocks[0].ql[64 + 8] = 0x70;
  blocks[0].qh[32 + 8] = 0x20;
  blocks[0].scales[12] = -3;
  const auto y = run(ggml_type::q6_k, blocks, 256);
  CHECK(y[200] == 0.5f * -3 * ((7 | 2 << 4) - 32));
  // Value k: half h, quarter c (32 values each) of that half, position l. Quarters 0/1 take the low
  // nibbles of ql[64h + l] / ql[64h + 32 + l], quarters 2/3 the high nibbles; qh[32h + l] bits 2c..2c+1
  // are the top bits. Sixteen consecutive values share scale k/16.
  for (int b = 0; b < 2; ++b) {
    const block_q6_k& x = blocks[b];
    for (int k = 0; k < 256; ++k) {
      const int h = k / 128, c = (k % 128) / 32, l = k % 32;
      const uint8_t low_byte = x.ql[64 * h + 32 * (c % 2) + l];
      const int nibble = c < 2 ? (low_byte & 15) : (low_byte >> 4);
      const int top = (x.qh[32 * h + l] >> (2 * c)) & 3;
      const int q = (nibble | top << 4) - 32;
      CHECK(y[b * 256 + k] == d[b] * x.scales[k / 16] * q);
    }
  }
}

TEST_CASE("dequantize_row rejects bad sizes and unsupported types") {
  std::vector<uint8_t> src(1024);
  std::vector<float> dst(512);
  CHECK_THROWS_AS(dequantize_row(ggml_type::q4_0, src.data(), dst.data(), 33), std::invalid_argument);
  CHECK_THROWS_AS(dequantize_row(ggml_type::q4_k, src.data(), dst.data(), 128), std::invalid_argument);
  CHECK_THROWS_AS(dequantize_row(ggml_type::f32, src.data(), dst.data(), -1), std::invalid_argument);
  CHECK_THROWS_AS(dequantize_row(ggml_type::q8_1, src.data(), dst.data(), 32), std::invalid_argument);
  CHECK_THROWS_AS(dequantize_row(ggml_type::q8_k, src.data(), dst.data(), 256), std::invalid_argument);
  CHECK_THROWS_AS(dequantize_row(static_cast<ggml_type>(99), src.data(), dst.data(), 32), std::invalid_argument);
  dst[0] = 7.0f;
  dequantize_row(ggml_type::q6_k, src.data(), dst.data(), 0);  // nothing to do
  CHECK(dst[0] == 7.0f);
}

TEST_CASE("ggml type traits and row_bytes") {
  struct expected { ggml_type type; uint32_t id; size_t elements, bytes; };
  const expected table[] = {
      {ggml_type::f32, 0, 1, 4},       {ggml_type::f16, 1, 1, 2},       {ggml_type::bf16, 30, 1, 2},
      {ggml_type::q4_0, 2, 32, 18},    {ggml_type::q4_1, 3, 32, 20},    {ggml_type::q5_0, 6, 32, 22},
      {ggml_type::q5_1, 7, 32, 24},    {ggml_type::q8_0, 8, 32, 34},    {ggml_type::q8_1, 9, 32, 36},
      {ggml_type::q4_k, 12, 256, 144}, {ggml_type::q5_k, 13, 256, 176}, {ggml_type::q6_k, 14, 256, 210},
      {ggml_type::q8_k, 15, 256, 292},
  };
  for (const auto& e : table) {
    CAPTURE(e.id);
    const ggml_type_traits* t = find_type_traits(e.id);
    REQUIRE(t != nullptr);
    CHECK(t == &type_traits(e.type));
    CHECK(t->block_elements == e.elements);
    CHECK(t->block_bytes == e.bytes);
    CHECK(row_bytes(e.type, e.elements * 3) == e.bytes * 3);
  }
  CHECK(std::string(type_traits(ggml_type::q4_k).name) == "q4_K");
  CHECK(find_type_traits(4) == nullptr);  // q4_2, removed from ggml
  CHECK(find_type_traits(23) == nullptr);
  CHECK(row_bytes(ggml_type::q4_1, 576) == 18 * 20);
  CHECK_THROWS_AS(row_bytes(ggml_type::q4_k, 576), std::invalid_argument);
  CHECK_THROWS_AS(type_traits(static_cast<ggml_type>(5)), std::invalid_argument);
}

namespace {

// Reads `size` bytes at `offset` with plain file I/O, independently of the GGUF reader's mapping.
std::vector<uint8_t> read_bytes(const std::string& path, uint64_t offset, size_t size) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(std::streamoff(offset));
  std::vector<uint8_t> out(size);
  in.read(reinterpret_cast<char*>(out.data()), std::streamsize(size));
  REQUIRE(size_t(in.gcount()) == size);
  return out;
}

uint16_t u16_at(const std::vector<uint8_t>& bytes, size_t offset) {
  uint16_t v;
  std::memcpy(&v, bytes.data() + offset, 2);
  return v;
}

}  // namespace

TEST_CASE("real model tensors dequantize from their raw bytes") {
  const std::string model = INFLIGHT_DEFAULT_MODEL;
  if (!std::filesystem::exists(model)) {
    MESSAGE("skipped: no model at " << model);
    return;
  }
  const auto file = gguf::gguf_file::open(model);
  const gguf::tensor_info& norm = file->tensor("blk.0.attn_norm.weight");
  REQUIRE(norm.type == ggml_type::f32);
  REQUIRE(norm.dims == std::vector<uint64_t>{576});
  const auto raw = read_bytes(model, file->data_offset() + norm.offset, 576 * 4);
  std::vector<float> expected(576), got(576);
  std::memcpy(expected.data(), raw.data(), raw.size());
  dequantize_row(norm.type, norm.data, got.data(), 576);
  CHECK(got == expected);

  // Row 1 of the Q8_0 embedding: 18 blocks of (f16 d, 32 x int8), value = q * d.
  const gguf::tensor_info& embd = file->tensor("token_embd.weight");
  REQUIRE(embd.type == ggml_type::q8_0);
  const auto row = read_bytes(model, file->data_offset() + embd.offset + embd.row_bytes(), embd.row_bytes());
  dequantize_row(embd.type, embd.data + embd.row_bytes(), got.data(), 576);
  for (int block = 0; block < 18; ++block) {
    const float d = fp16_to_fp32(u16_at(row, block * 34));
    for (int j = 0; j < 32; ++j) CHECK(got[block * 32 + j] == float(int8_t(row[block * 34 + 2 + j])) * d);
  }

  // Row 2 of a Q4_1 weight: 18 blocks of (f16 d, f16 m, 16 bytes of nibbles), value = q * d + m.
  const gguf::tensor_info& q = file->tensor("blk.0.attn_q.weight");
  REQUIRE(q.type == ggml_type::q4_1);
  const auto q_row = read_bytes(model, file->data_offset() + q.offset + 2 * q.row_bytes(), q.row_bytes());
  dequantize_row(q.type, q.data + 2 * q.row_bytes(), got.data(), 576);
  for (int block = 0; block < 18; ++block) {
    const float d = fp16_to_fp32(u16_at(q_row, block * 20)), m = fp16_to_fp32(u16_at(q_row, block * 20 + 2));
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = q_row[block * 20 + 4 + j % 16];
      CHECK(got[block * 32 + j] == float(j < 16 ? byte & 15 : byte >> 4) * d + m);
    }
  }
}
