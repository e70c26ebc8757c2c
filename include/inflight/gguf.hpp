// GGUF v2/v3 reader: the file is memory-mapped once; metadata is parsed into values, tensor data stays
// in the mapping and is handed out as pointers (no copy of the weights).
//
// Every structural problem (bad magic, unsupported version, truncated file, tensor outside the file,
// unknown value or tensor type, missing key) is reported as a gguf_error whose message names it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "inflight/ggml_type.hpp"

namespace inflight::gguf {

class gguf_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The value types of GGUF metadata, with their on-disk ids.
enum class value_type : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

const char* value_type_name(value_type t);

// One metadata value. Integers keep their sign class (u8..u64 -> uint64_t, i8..i64 -> int64_t),
// floats widen to double; `type` remembers the on-disk type. Arrays may nest.
struct value {
  value_type type = value_type::u8;
  value_type element_type = value_type::u8;  // meaningful only when type == array
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<value>> data;

  bool is_integer() const;
  bool is_float() const;
  // Conversions that throw gguf_error naming `what` when the value has another type or is out of range.
  uint64_t as_uint(std::string_view what) const;
  int64_t as_int(std::string_view what) const;
  double as_float(std::string_view what) const;  // accepts integers too
  bool as_bool(std::string_view what) const;
  const std::string& as_string(std::string_view what) const;
  const std::vector<value>& as_array(std::string_view what) const;
};

struct metadata_entry {
  std::string key;
  value val;
};

struct tensor_info {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] varies fastest (a weight's input dimension)
  ggml_type type = ggml_type::f32;
  uint64_t offset = 0;         // relative to the data section
  uint64_t num_elements = 0;
  uint64_t num_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping

  uint64_t rows() const;        // product of dims[1..]
  uint64_t row_bytes() const;   // bytes of one dims[0]-long row
};

class gguf_file {
 public:
  // Maps and parses `path`. Throws gguf_error (e.g. "model.gguf: truncated file: tensor info 3 ends at
  // byte 4096 but the file has 100 bytes").
  static std::shared_ptr<const gguf_file> open(const std::string& path);

  ~gguf_file();
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  // Metadata in file order.
  const std::vector<metadata_entry>& metadata() const { return metadata_; }
  const value* find(std::string_view key) const;
  const value& get(std::string_view key) const;  // throws "missing required key 'k'"

  // Typed accessors: the get_* forms throw when the key is missing or has the wrong type.
  uint64_t get_uint(std::string_view key) const;
  double get_float(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;
  std::optional<uint64_t> find_uint(std::string_view key) const;
  std::optional<double> find_float(std::string_view key) const;
  std::optional<bool> find_bool(std::string_view key) const;
  std::optional<std::string> find_string(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<double> get_float_array(std::string_view key) const;

  const std::vector<tensor_info>& tensors() const { return tensors_; }
  const tensor_info* find_tensor(std::string_view name) const;
  const tensor_info& tensor(std::string_view name) const;  // throws "missing tensor 'n'"

 private:
  gguf_file() = default;
  void parse();

  std::string path_;
  int fd_ = -1;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<metadata_entry> metadata_;
  std::vector<tensor_info> tensors_;
};

// Renders a value for display; arrays longer than `max_items` are abbreviated ("[a, b, c, ... (49152 items)]").
std::string to_display_string(const value& v, size_t max_items = 8, size_t max_string = 120);

}  // namespace inflight::gguf
