// A small GGUF writer for tests: metadata written value by value (or copied from a file that was read),
// tensors laid out at aligned offsets. Deliberately permissive: it writes whatever it is told (a wrong
// count, an unknown type id, a misaligned offset), so tests can build corrupt files as easily as valid ones.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "inflight/gguf.hpp"

namespace inflight::test {

struct byte_writer {
  std::vector<uint8_t> bytes;

  template <class T>
  byte_writer& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof v);
    return *this;
  }
  byte_writer& type(gguf::value_type t) { return put(static_cast<uint32_t>(t)); }
  byte_writer& str(std::string_view s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  // Array header: element type and count; the caller writes the elements.
  byte_writer& array(gguf::value_type element, uint64_t count) { return type(element).put(count); }

  // The on-disk form of `v` without its leading type id (which key() has already written), as the
  // reader parsed it: integers narrowed back to their original width, arrays with their element type.
  byte_writer& value(const gguf::value& v) {
    using gguf::value_type;
    switch (v.type) {
      case value_type::u8: return put(uint8_t(std::get<uint64_t>(v.data)));
      case value_type::u16: return put(uint16_t(std::get<uint64_t>(v.data)));
      case value_type::u32: return put(uint32_t(std::get<uint64_t>(v.data)));
      case value_type::u64: return put(std::get<uint64_t>(v.data));
      case value_type::i8: return put(int8_t(std::get<int64_t>(v.data)));
      case value_type::i16: return put(int16_t(std::get<int64_t>(v.data)));
      case value_type::i32: return put(int32_t(std::get<int64_t>(v.data)));
      case value_type::i64: return put(std::get<int64_t>(v.data));
      case value_type::f32: return put(float(std::get<double>(v.data)));
      case value_type::f64: return put(std::get<double>(v.data));
      case value_type::boolean: return put(uint8_t(std::get<bool>(v.data) ? 1 : 0));
      case value_type::string: return str(std::get<std::string>(v.data));
      case value_type::array: {
        const auto& items = std::get<std::vector<gguf::value>>(v.data);
        array(v.element_type, items.size());
        // Elements carry no type id of their own; an inner array starts with its element type and count.
        for (const auto& item : items) value(item);
        return *this;
      }
    }
    throw std::invalid_argument("byte_writer::value: unknown value type");
  }
};

struct tensor_spec {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type = 0;
  std::vector<uint8_t> data;
  std::optional<uint64_t> offset;  // written instead of the real offset
};

struct gguf_builder {
  uint32_t magic = 0x46554747;
  uint32_t version = 3;
  uint64_t alignment = 32;  // layout only: add a general.alignment key to tell the reader
  std::optional<uint64_t> tensor_count, kv_count;  // written instead of the real counts
  byte_writer kvs;
  uint64_t num_kvs = 0;
  std::vector<tensor_spec> tensors;

  // Starts a key of type `t`; the caller writes the value into the returned writer.
  byte_writer& key(std::string_view name, gguf::value_type t) {
    ++num_kvs;
    return kvs.str(name).type(t);
  }

  // Copies every metadata entry of `file`, in file order, and its alignment.
  void copy_metadata(const gguf::gguf_file& file) {
    alignment = file.alignment();
    for (const auto& entry : file.metadata()) key(entry.key, entry.val.type).value(entry.val);
  }

  // Each tensor's data starts at the next aligned offset after the previous one's.
  std::vector<uint64_t> offsets() const {
    std::vector<uint64_t> result;
    for (size_t i = 0; i < tensors.size(); ++i) {
      result.push_back(i == 0 ? 0 : result.back() + round_up(tensors[i - 1].data.size()));
    }
    return result;
  }

  // Header, metadata and tensor infos; the data section starts at the next multiple of the alignment.
  std::vector<uint8_t> header() const {
    byte_writer out;
    out.put(magic).put(version).put<uint64_t>(tensor_count.value_or(tensors.size()));
    out.put<uint64_t>(kv_count.value_or(num_kvs)).bytes.insert(out.bytes.end(), kvs.bytes.begin(), kvs.bytes.end());
    const auto data_offsets = offsets();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      out.str(t.name).put<uint32_t>(uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) out.put(d);
      out.put(t.type).put<uint64_t>(t.offset.value_or(data_offsets[i]));
    }
    return out.bytes;
  }

  // The whole file. Without tensors it ends right after the metadata (no padding).
  std::vector<uint8_t> build() const {
    std::vector<uint8_t> out = header();
    const uint64_t data_start = round_up(out.size());
    const auto data_offsets = offsets();
    for (size_t i = 0; i < tensors.size(); ++i) {
      out.resize(data_start + data_offsets[i], 0);
      out.insert(out.end(), tensors[i].data.begin(), tensors[i].data.end());
    }
    return out;
  }

  // The same bytes as build(), streamed to `path` without assembling the whole file in memory first.
  void write(const std::string& path) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const std::vector<uint8_t> head = header();
    out.write(reinterpret_cast<const char*>(head.data()), std::streamsize(head.size()));
    const uint64_t data_start = round_up(head.size());
    const std::vector<char> padding(alignment, 0);
    uint64_t written = head.size();
    const auto data_offsets = offsets();
    for (size_t i = 0; i < tensors.size(); ++i) {
      out.write(padding.data(), std::streamsize(data_start + data_offsets[i] - written));
      out.write(reinterpret_cast<const char*>(tensors[i].data.data()), std::streamsize(tensors[i].data.size()));
      written = data_start + data_offsets[i] + tensors[i].data.size();
    }
    if (!out.flush()) throw std::runtime_error("gguf_builder: cannot write " + path);
  }

 private:
  uint64_t round_up(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }
};

}  // namespace inflight::test
