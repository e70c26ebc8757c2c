// GGUF reader: small files written here byte by byte (valid and corrupted), then the real model when
// it is present. Every corruption must surface as a gguf_error naming the problem, never as a crash.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "gguf_test_writer.hpp"
#include "inflight/gguf.hpp"
#include "inflight/quant.hpp"

using namespace inflight;
using namespace inflight::gguf;
namespace fs = std::filesystem;

namespace {

using test::byte_writer;
using test::gguf_builder;

std::vector<uint8_t> float_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> out(values.size() * 4);
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// One scratch directory per test process, removed at exit. A mapped file stays valid after it is
// overwritten by name (the writer replaces the directory entry), so tests reuse a few names freely.
struct temp_dir {
  fs::path path = fs::temp_directory_path() / ("inflight_test_gguf_" + std::to_string(::getpid()));
  temp_dir() { fs::create_directories(path); }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const fs::path file = path / name;
    fs::remove(file);  // a new inode: a still-mapped earlier file keeps its bytes
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return file.string();
  }
};

const temp_dir& scratch() {
  static const temp_dir dir;
  return dir;
}

// The gguf_error message thrown by `f`, or a marker saying what happened instead.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
    return "<no error>";
  } catch (const gguf_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<other exception: ") + e.what() + ">";
  }
}

std::string open_error(const std::string& path) {
  return error_of([&] { gguf_file::open(path); });
}

std::string build_error(const gguf_builder& b) { return open_error(scratch().write("built.gguf", b.build())); }

// The error from opening the first `length` bytes of `bytes`.
std::string prefix_error(const std::vector<uint8_t>& bytes, size_t length) {
  return open_error(scratch().write("prefix.gguf", std::vector<uint8_t>(bytes.begin(), bytes.begin() + length)));
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

template <class T>
value make_value(value_type type, T data) {
  value v;
  v.type = type;
  v.data = std::move(data);
  return v;
}

// A small valid file with a few metadata types and two tensors (its every prefix is invalid).
gguf_builder small_file() {
  gguf_builder b;
  b.key("general.architecture", value_type::string).str("llama");
  b.key("llama.block_count", value_type::u32).put<uint32_t>(2);
  b.key("c.str", value_type::string).str("some text here");
  b.key("tokens", value_type::array).array(value_type::string, 3).str("a").str("bc").str("def");
  b.key("nested", value_type::array).array(value_type::array, 2);
  b.kvs.array(value_type::i16, 2).put<int16_t>(-1).put<int16_t>(2);
  b.kvs.array(value_type::u8, 0);
  b.key("eps", value_type::f32).put(1e-5f);
  b.tensors.push_back({"norm.weight", {4}, 0, float_bytes({1, 2, 3, 4}), {}});
  b.tensors.push_back({"w", {32, 2}, 8, std::vector<uint8_t>(68, 0x11), {}});
  return b;
}

}  // namespace

TEST_CASE("reads every metadata value type") {
  gguf_builder b;
  b.key("u8", value_type::u8).put<uint8_t>(200);
  b.key("i8", value_type::i8).put<int8_t>(-5);
  b.key("u16", value_type::u16).put<uint16_t>(60000);
  b.key("i16", value_type::i16).put<int16_t>(-300);
  b.key("u32", value_type::u32).put<uint32_t>(4000000000u);
  b.key("i32", value_type::i32).put<int32_t>(-2000000000);
  b.key("f32", value_type::f32).put(1.5f);
  b.key("bool", value_type::boolean).put<uint8_t>(1);
  b.key("string", value_type::string).str("h\xc3\xa9llo\nworld");
  b.key("u64", value_type::u64).put<uint64_t>(9223372036854775813ull);
  b.key("i64", value_type::i64).put<int64_t>(-1099511627776ll);
  b.key("f64", value_type::f64).put(0.1);
  b.key("array.u32", value_type::array).array(value_type::u32, 3).put<uint32_t>(1).put<uint32_t>(2).put<uint32_t>(3);
  b.key("array.strings", value_type::array).array(value_type::string, 2).str("x").str("");
  b.key("array.empty", value_type::array).array(value_type::f64, 0);
  // [[1, -2], [], [[true]]]: arrays of arrays, of mixed element types.
  b.key("array.nested", value_type::array).array(value_type::array, 3);
  b.kvs.array(value_type::i16, 2).put<int16_t>(1).put<int16_t>(-2);
  b.kvs.array(value_type::u8, 0);
  b.kvs.array(value_type::array, 1).array(value_type::boolean, 1).put<uint8_t>(1);
  b.key("empty.string", value_type::string).str("");
  const auto file = gguf_file::open(scratch().write("types.gguf", b.build()));

  REQUIRE(file->metadata().size() == 17);
  CHECK(file->metadata()[0].key == "u8");  // file order is kept
  CHECK(file->metadata()[16].key == "empty.string");
  CHECK(file->version() == 3);
  CHECK(file->tensors().empty());
  CHECK(file->get("u8").type == value_type::u8);
  CHECK(file->get_uint("u8") == 200);
  CHECK(file->get("i8").as_int("i8") == -5);
  CHECK(file->get_uint("u16") == 60000);
  CHECK(file->get("i16").as_int("i16") == -300);
  CHECK(file->get_uint("u32") == 4000000000u);
  CHECK(file->get("i32").as_int("i32") == -2000000000);
  CHECK(file->get("f32").type == value_type::f32);
  CHECK(file->get_float("f32") == 1.5);
  CHECK(file->get_bool("bool") == true);
  CHECK(file->get_string("string") == "h\xc3\xa9llo\nworld");
  CHECK(file->get_uint("u64") == 9223372036854775813ull);
  CHECK(file->get("i64").as_int("i64") == -1099511627776ll);
  CHECK(file->get_float("f64") == 0.1);
  CHECK(file->get_int_array("array.u32") == std::vector<int64_t>{1, 2, 3});
  CHECK(file->get("array.u32").element_type == value_type::u32);
  CHECK(file->get_string_array("array.strings") == std::vector<std::string>{"x", ""});
  CHECK(file->get("array.empty").element_type == value_type::f64);
  CHECK(file->get_float_array("array.empty").empty());
  CHECK(file->get_string("empty.string").empty());

  const value& nested = file->get("array.nested");
  CHECK(nested.element_type == value_type::array);
  const auto& outer = nested.as_array("array.nested");
  REQUIRE(outer.size() == 3);
  CHECK(outer[0].element_type == value_type::i16);
  CHECK(outer[1].element_type == value_type::u8);
  CHECK(outer[2].as_array("x").at(0).element_type == value_type::boolean);
  CHECK(to_display_string(nested) == "[[1, -2], [], [[true]]]");
}

TEST_CASE("every integer width is accepted as an integer") {
  gguf_builder b;
  b.key("u8", value_type::u8).put<uint8_t>(7);
  b.key("i8", value_type::i8).put<int8_t>(7);
  b.key("u16", value_type::u16).put<uint16_t>(7);
  b.key("i16", value_type::i16).put<int16_t>(7);
  b.key("u32", value_type::u32).put<uint32_t>(7);
  b.key("i32", value_type::i32).put<int32_t>(7);
  b.key("u64", value_type::u64).put<uint64_t>(7);
  b.key("i64", value_type::i64).put<int64_t>(7);
  b.key("negative", value_type::i32).put<int32_t>(-3);
  b.key("huge", value_type::u64).put<uint64_t>(~0ull);
  b.key("llama.block_count", value_type::string).str("30");
  b.key("flag", value_type::boolean).put<uint8_t>(0);
  const auto file = gguf_file::open(scratch().write("ints.gguf", b.build()));
  for (const char* key : {"u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"}) {
    CAPTURE(key);
    CHECK(file->get(key).is_integer());
    CHECK_FALSE(file->get(key).is_float());
    CHECK(file->get_uint(key) == 7);
    CHECK(file->find_uint(key) == 7u);
    CHECK(file->get(key).as_int(key) == 7);
    CHECK(file->get_float(key) == 7.0);
  }
  CHECK(file->get("negative").as_int("negative") == -3);
  CHECK(file->get_float("negative") == -3.0);
  CHECK(contains(error_of([&] { file->get_uint("negative"); }), "metadata key 'negative' is negative"));
  CHECK(contains(error_of([&] { file->get("huge").as_int("huge"); }), "metadata key 'huge'"));
  CHECK(error_of([&] { file->get_uint("llama.block_count"); }) ==
        "metadata key 'llama.block_count' has type string, expected an integer");
  CHECK(contains(error_of([&] { file->get_float("llama.block_count"); }), "has type string"));
  CHECK(contains(error_of([&] { file->get_bool("u8"); }), "metadata key 'u8' has type u8"));
  CHECK(contains(error_of([&] { file->get_string("u8"); }), "expected a string"));
  CHECK(contains(error_of([&] { file->find_uint("flag"); }), "has type bool"));
  CHECK(file->find_bool("flag") == false);
}

TEST_CASE("typed array getters check the element type") {
  gguf_builder b;
  b.key("ints", value_type::array).array(value_type::i32, 2).put<int32_t>(-1).put<int32_t>(5);
  b.key("bytes", value_type::array).array(value_type::u8, 2).put<uint8_t>(255).put<uint8_t>(0);
  b.key("floats", value_type::array).array(value_type::f32, 2).put(0.5f).put(-2.0f);
  b.key("strings", value_type::array).array(value_type::string, 1).str("s");
  b.key("scalar", value_type::u32).put<uint32_t>(1);
  const auto file = gguf_file::open(scratch().write("arrays.gguf", b.build()));
  CHECK(file->get_int_array("ints") == std::vector<int64_t>{-1, 5});
  CHECK(file->get_int_array("bytes") == std::vector<int64_t>{255, 0});
  CHECK(file->get_float_array("floats") == std::vector<double>{0.5, -2.0});
  CHECK(file->get_float_array("ints") == std::vector<double>{-1.0, 5.0});
  CHECK(file->get_string_array("strings") == std::vector<std::string>{"s"});
  CHECK(contains(error_of([&] { file->get_string_array("ints"); }),
                 "metadata key 'ints' has type array of i32, expected an array of strings"));
  CHECK(contains(error_of([&] { file->get_int_array("floats"); }), "expected an array of integers"));
  CHECK(contains(error_of([&] { file->get_int_array("strings"); }), "expected an array of integers"));
  CHECK(contains(error_of([&] { file->get_float_array("strings"); }), "expected an array of numbers"));
  CHECK(contains(error_of([&] { file->get_string_array("scalar"); }), "has type u32"));
  CHECK(contains(error_of([&] { file->get("scalar").as_array("scalar"); }), "expected an array"));
}

TEST_CASE("missing keys and tensors are named") {
  const auto file = gguf_file::open(scratch().write("small.gguf", small_file().build()));
  CHECK(file->find("absent.key") == nullptr);
  CHECK_FALSE((file->find_uint("absent.key") || file->find_float("absent.key") || file->find_bool("absent.key") ||
               file->find_string("absent.key")));
  CHECK(file->find_string("general.architecture") == "llama");
  CHECK(*file->find_float("eps") == doctest::Approx(1e-5));
  CHECK(contains(error_of([&] { file->get("absent.key"); }), "missing required key 'absent.key'"));
  CHECK(contains(error_of([&] { file->get_uint("absent.key"); }), "missing required key 'absent.key'"));
  CHECK(contains(error_of([&] { file->get_string_array("absent.key"); }), "missing required key"));
  CHECK(file->find_tensor("nope") == nullptr);
  CHECK(contains(error_of([&] { file->tensor("nope"); }), "missing tensor 'nope'"));
}

TEST_CASE("to_display_string quotes and abbreviates") {
  CHECK(to_display_string(make_value(value_type::string, std::string("a\nb\t\"c\"\\"))) ==
        "\"a\\nb\\t\\\"c\\\"\\\\\"");
  CHECK(to_display_string(make_value(value_type::string, std::string(200, 'x')), 8, 10) ==
        "\"xxxxxxxxxx\"... (200 bytes)");
  // "\u00e9\u00e9": a cut inside the second character backs off to the first.
  CHECK(to_display_string(make_value(value_type::string, std::string("\xc3\xa9\xc3\xa9")), 8, 3) ==
        "\"\xc3\xa9\"... (4 bytes)");

  std::vector<value> items(49152);
  for (size_t i = 0; i < items.size(); ++i) items[i] = make_value(value_type::u32, uint64_t(i));
  value tokens = make_value(value_type::array, std::move(items));
  tokens.element_type = value_type::u32;
  CHECK(to_display_string(tokens, 3) == "[0, 1, 2, ... (49152 items)]");
  CHECK(to_display_string(tokens, 0) == "[... (49152 items)]");

  CHECK(to_display_string(make_value(value_type::f32, double(1e-5f))) == "1e-05");  // not 9.99999974e-06
  CHECK(to_display_string(make_value(value_type::f64, 0.1)) == "0.1");
  CHECK(to_display_string(make_value(value_type::boolean, false)) == "false");
  CHECK(to_display_string(make_value(value_type::i32, int64_t(-7))) == "-7");
}

TEST_CASE("tensor infos and data pointers with the default alignment") {
  gguf_builder b = small_file();
  b.tensors.push_back({"h", {3, 1, 2}, 1, std::vector<uint8_t>(12, 0x3c), {}});
  const auto bytes = b.build();
  const auto file = gguf_file::open(scratch().write("tensors.gguf", bytes));
  CHECK(file->alignment() == 32);
  CHECK(file->data_offset() % 32 == 0);
  CHECK(file->file_size() == bytes.size());
  REQUIRE(file->tensors().size() == 3);
  struct expected { const char* name; ggml_type type; uint64_t offset, elements, bytes, rows, row_bytes; };
  for (const expected& e : {expected{"norm.weight", ggml_type::f32, 0, 4, 16, 1, 16},
                            expected{"w", ggml_type::q8_0, 32, 64, 68, 2, 34},
                            expected{"h", ggml_type::f16, 128, 6, 12, 2, 6}}) {
    CAPTURE(e.name);
    const tensor_info& t = file->tensor(e.name);
    CHECK(t.type == e.type);
    CHECK(t.offset == e.offset);
    CHECK(t.num_elements == e.elements);
    CHECK(t.num_bytes == e.bytes);
    CHECK(t.rows() == e.rows);
    CHECK(t.row_bytes() == e.row_bytes);
    CHECK(t.data - file->tensors()[0].data == int64_t(e.offset));
    CHECK(std::memcmp(t.data, bytes.data() + file->data_offset() + e.offset, e.bytes) == 0);
  }
  CHECK(file->tensor("h").dims == std::vector<uint64_t>{3, 1, 2});
  std::vector<float> floats(4);
  dequantize_row(ggml_type::f32, file->tensor("norm.weight").data, floats.data(), 4);
  CHECK(floats == std::vector<float>{1, 2, 3, 4});
}

TEST_CASE("non-default alignment of 64 from any integer type") {
  for (value_type t : {value_type::u32, value_type::u8, value_type::i64, value_type::u16}) {
    CAPTURE(value_type_name(t));
    gguf_builder b = small_file();
    b.alignment = 64;
    byte_writer& w = b.key("general.alignment", t);
    if (t == value_type::u32) w.put<uint32_t>(64);
    if (t == value_type::u8) w.put<uint8_t>(64);
    if (t == value_type::i64) w.put<int64_t>(64);
    if (t == value_type::u16) w.put<uint16_t>(64);
    const auto bytes = b.build();
    const auto file = gguf_file::open(scratch().write("align64.gguf", bytes));
    CHECK(file->alignment() == 64);
    CHECK(file->data_offset() % 64 == 0);
    const tensor_info& w_tensor = file->tensor("w");
    CHECK(w_tensor.offset == 64);
    CHECK(std::memcmp(w_tensor.data, bytes.data() + file->data_offset() + 64, 68) == 0);
    CHECK(reinterpret_cast<uintptr_t>(w_tensor.data) % 64 == 0);  // the mapping is page-aligned
    // Read with the default alignment of 32, this layout would be wrong; make sure it was not.
    CHECK(file->tensor("norm.weight").data[0] == bytes[file->data_offset()]);
  }
}

TEST_CASE("bad general.alignment values are rejected") {
  struct bad { value_type type; int64_t value; const char* phrase; };
  for (const bad& c : {bad{value_type::u32, 0, "power of two"}, bad{value_type::u32, 48, "power of two"},
                       bad{value_type::i32, -32, "power of two"}}) {
    CAPTURE(c.value);
    gguf_builder b = small_file();
    byte_writer& w = b.key("general.alignment", c.type);
    if (c.type == value_type::u32) w.put<uint32_t>(uint32_t(c.value));
    if (c.type == value_type::i32) w.put<int32_t>(int32_t(c.value));
    CHECK(contains(build_error(b), c.phrase));
  }
  gguf_builder b = small_file();
  b.key("general.alignment", value_type::string).str("32");
  CHECK(contains(build_error(b), "expected an integer"));
}

TEST_CASE("bad magic and unsupported versions") {
  gguf_builder b = small_file();
  b.magic = 0x4c4d4747;  // "GGML"
  CHECK(contains(build_error(b), "bad magic 'GGML'"));
  for (uint32_t version : {1u, 4u}) {
    gguf_builder v = small_file();
    v.version = version;
    const std::string path = scratch().write("version.gguf", v.build());
    CHECK(open_error(path) ==
          path + ": unsupported GGUF version " + std::to_string(version) + " (supported: 2, 3)");
  }
  gguf_builder v2 = small_file();
  v2.version = 2;
  CHECK(gguf_file::open(scratch().write("v2.gguf", v2.build()))->version() == 2);
}

TEST_CASE("every truncated prefix of a small file throws") {
  const auto bytes = small_file().build();
  REQUIRE(open_error(scratch().write("full.gguf", bytes)) == "<no error>");
  const std::string path = scratch().write("cut.gguf", bytes);
  // Shrinking one file in place (largest cut first) avoids rewriting it for every length.
  for (size_t length = bytes.size(); length-- > 0;) {
    fs::resize_file(path, length);
    const std::string message = open_error(path);
    INFO("length " << length << ": " << message);
    CHECK((contains(message, "truncated") || contains(message, "lies outside the file")));
  }
}

TEST_CASE("single corrupted bytes never crash") {
  // Every byte of the small file set to a few values: each file either opens or throws gguf_error.
  const auto bytes = small_file().build();
  size_t opened = 0, rejected = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t replacement : {uint8_t(0x00), uint8_t(0xff), uint8_t(0x80), uint8_t(bytes[i] ^ 0x01)}) {
      if (replacement == bytes[i]) continue;
      auto corrupt = bytes;
      corrupt[i] = replacement;
      const std::string message = open_error(scratch().write("flip.gguf", corrupt));
      if (message == "<no error>") {
        ++opened;
      } else {
        ++rejected;
        CAPTURE(i);
        CHECK_FALSE(contains(message, "<other exception"));
      }
    }
  }
  CHECK(rejected > 0);
  CHECK(opened > 0);  // flips inside string bytes and tensor data are harmless
}

TEST_CASE("truncation messages name the key being read") {
  gguf_builder b = small_file();
  const auto bytes = b.build();
  // Cut inside the value of key 2 ("c.str"): header 24 bytes, key 0 = 8+20+4+8+5, key 1 = 8+17+4+4.
  const size_t key2_value = 24 + (8 + 20 + 4 + 8 + 5) + (8 + 17 + 4 + 4) + (8 + 5 + 4);
  const std::string path = scratch().path / "prefix.gguf";
  CHECK(prefix_error(bytes, key2_value + 10) == path + ": truncated file: metadata key 2 ('c.str') ends past the end "
                                                       "of the file (" + std::to_string(key2_value + 10) + " bytes)");
  const size_t key3 = key2_value + 8 + 14;  // inside the name of key 3: no key name is known yet
  CHECK(contains(prefix_error(bytes, key3 + 10), "truncated file: metadata key 3 ends past the end"));
  // Too short for the declared number of keys at all.
  CHECK(contains(prefix_error(bytes, 40), "metadata count 6 is impossible for a file of 40 bytes"));
  CHECK(contains(prefix_error(bytes, 12), "truncated file: header"));
  CHECK(contains(open_error(scratch().write("empty.gguf", {})), "truncated file: header"));
}

TEST_CASE("huge lengths and counts are rejected before allocating") {
  auto error_with = [](auto&& edit, gguf_builder b = {}) {
    edit(b);
    return build_error(b);
  };
  CHECK(contains(error_with([](gguf_builder& b) {  // key length 2^62, with enough bytes for the key count
    b.kvs.put<uint64_t>(1ull << 62).bytes.resize(64, 0);
    b.num_kvs = 1;
  }), "truncated file: metadata key 0"));
  CHECK(contains(error_with([](gguf_builder& b) { b.key("general.name", value_type::string).put<uint64_t>(~0ull); }),
                 "truncated file: metadata key 0 ('general.name') ends past the end"));
  CHECK(contains(error_with([](gguf_builder& b) {
    b.key("tokens", value_type::array).array(value_type::u32, 1ull << 60).put<uint32_t>(1);
  }), "metadata key 0 ('tokens') ends past the end"));
  CHECK(contains(error_with([](gguf_builder& b) {  // a nested array whose inner count is huge
    b.key("nested", value_type::array).array(value_type::array, 1).array(value_type::string, 1ull << 59);
  }), "truncated file"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensor_count = 1ull << 40; }, small_file()),
                 "tensor count 1099511627776 is impossible"));
  CHECK(contains(error_with([](gguf_builder& b) { b.kv_count = ~0ull; }, small_file()), "metadata count"));
  CHECK(contains(error_with([](gguf_builder& b) {  // arrays nested 100 deep (a stack-overflow attempt)
    b.key("deep", value_type::array);
    for (int i = 0; i < 99; ++i) b.kvs.array(value_type::array, 1);
    b.kvs.array(value_type::u8, 0);
  }), "nests arrays deeper"));
}

TEST_CASE("unknown metadata value types") {
  gguf_builder b;
  b.key("x", static_cast<value_type>(99)).put<uint32_t>(0);
  const std::string path = scratch().write("a.gguf", b.build());
  CHECK(open_error(path) == path + ": unknown metadata value type 99 for key 'x'");
  gguf_builder a;
  a.key("arr", value_type::array).array(static_cast<value_type>(13), 1).put<uint32_t>(0);
  CHECK(contains(build_error(a), "unknown metadata value type 13 for key 'arr'"));
}

TEST_CASE("tensor info errors") {
  auto error_with = [&](auto&& edit) {
    gguf_builder b = small_file();
    edit(b);
    return build_error(b);
  };
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[1].name = "blk.0.attn_q.weight", b.tensors[1].type = 23; }),
                 "tensor 'blk.0.attn_q.weight' has unsupported type 23"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[0].dims = {}; }), "has 0 dimensions"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[0].dims = {1, 1, 1, 1, 4}; }), "has 5 dimensions"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[1].offset = 40; }),
                 "tensor 'w' has offset 40, not a multiple of the alignment 32"));
  const std::string outside = error_with([](gguf_builder& b) { b.tensors[1].offset = 4096; });
  CHECK((contains(outside, "tensor 'w' (bytes ") && contains(outside, ") lies outside the file (")));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[1].offset = 1ull << 63; }), "lies outside the file"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[1].offset = ~0ull - 31; }), "lies outside the file"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[1].dims = {48, 1}; }),
                 "not a multiple of the q8_0 block size"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[0].dims = {1ull << 32, 1ull << 32, 256}; }),
                 "too many elements"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[0].dims = {1ull << 40, 1ull << 20}; }),
                 "lies outside the file"));
  CHECK(contains(error_with([](gguf_builder& b) { b.tensors[1].name = "norm.weight"; }),
                 "duplicate tensor name 'norm.weight'"));
  CHECK(contains(error_with([](gguf_builder& b) { b.key("general.architecture", value_type::u8).put<uint8_t>(1); }),
                 "duplicate metadata key 'general.architecture'"));
}

TEST_CASE("files that are not there or not files") {
  CHECK(contains(open_error((scratch().path / "missing.gguf").string()), "cannot open"));
  CHECK(contains(open_error(scratch().path.string()), "not a regular file"));
}

// ---- the real model (present in this repository's setup and in CI) ----

namespace {

const std::string k_model = INFLIGHT_DEFAULT_MODEL;

bool have_model() {
  if (fs::exists(k_model)) return true;
  MESSAGE("skipped: no model at " << k_model);
  return false;
}

}  // namespace

TEST_CASE("real model metadata and tensor table") {
  if (!have_model()) return;
  const auto file = gguf_file::open(k_model);
  CHECK(file->version() == 3);
  CHECK(file->get_string("general.architecture") == "llama");
  CHECK(file->get_uint("llama.block_count") == 30);
  CHECK(file->get_uint("llama.embedding_length") == 576);
  CHECK(file->get_uint("llama.attention.head_count") == 9);
  CHECK(file->get_uint("llama.attention.head_count_kv") == 3);
  CHECK(file->get_float("llama.rope.freq_base") == 100000.0);
  CHECK(file->tensors().size() == 272);
  const tensor_info& embd = file->tensor("token_embd.weight");
  CHECK(embd.type == ggml_type::q8_0);
  CHECK(embd.dims == std::vector<uint64_t>{576, 49152});
  CHECK(file->tensor("blk.0.attn_q.weight").type == ggml_type::q4_1);
  CHECK(file->tensor("blk.0.attn_q.weight").dims == std::vector<uint64_t>{576, 576});
  const auto tokens = file->get_string_array("tokenizer.ggml.tokens");
  CHECK(tokens.size() == 49152);
  CHECK(tokens[2] == "<|im_end|>");
  CHECK(file->get_int_array("tokenizer.ggml.token_type").size() == 49152);
  uint64_t end = 0;
  for (const auto& t : file->tensors()) {
    CHECK(t.offset % file->alignment() == 0);
    end = std::max(end, file->data_offset() + t.offset + t.num_bytes);
  }
  CHECK(end <= file->file_size());
  CHECK(contains(to_display_string(file->get("tokenizer.ggml.tokens")), "(49152 items)]"));
}

TEST_CASE("truncated copies of the real model never crash") {
  if (!have_model()) return;
  const size_t prefix = size_t(1) << 20;  // all metadata: the tokens and merges arrays end past 1 MiB
  const std::string path = (scratch().path / "model_prefix.gguf").string();
  fs::copy_file(k_model, path, fs::copy_options::overwrite_existing);
  // Every length up to 4 KiB (header, the first keys), then a sample across the rest, largest first so
  // the one file can be shrunk in place.
  std::vector<size_t> lengths;
  for (size_t length = prefix; length > 4096; length -= 4093) lengths.push_back(length);
  for (size_t length = 4096; length-- > 0;) lengths.push_back(length);
  size_t failures = 0;
  for (size_t length : lengths) {
    fs::resize_file(path, length);
    const std::string message = open_error(path);
    const bool ok = contains(message, "truncated") || contains(message, "lies outside the file");
    if (!ok && ++failures <= 5) FAIL_CHECK("length " << length << ": " << message);
  }
  CHECK(failures == 0);
}
