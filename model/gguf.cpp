// GGUF reader. Layout (little-endian; ggml docs/gguf.md):
//
//   magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//   kv_count x   { key: string | value_type u32 | value }
//   tensor_count x { name: string | n_dims u32 | dims u64[n_dims] | ggml type u32 | offset u64 }
//   padding to general.alignment
//   data section: tensor i at data_start + offset_i
//
// The file comes from outside, so every read is bounds-checked against the file size and every count is
// checked against the bytes left before anything is allocated: a corrupt file yields a gguf_error, never
// a crash or a huge allocation.
#include "inflight/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <unordered_set>

namespace inflight::gguf {
namespace {

constexpr uint32_t k_magic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t k_default_alignment = 32;
constexpr int k_max_array_depth = 64;     // nesting deeper than this is corruption, and would blow the stack
constexpr uint32_t k_max_dims = 4;        // GGML_MAX_DIMS
constexpr uint64_t k_max_reserve = 65536;  // items reserved up front; more are appended as they parse

// Smallest on-disk size of one item, used to reject counts the rest of the file cannot hold.
constexpr uint64_t k_min_kv_bytes = 8 + 4 + 1;               // empty key, type, 1-byte value
constexpr uint64_t k_min_tensor_info_bytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, 1 dim, type, offset

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(value_type::f64); }

uint64_t min_value_bytes(value_type t) {
  switch (t) {
    case value_type::u8: case value_type::i8: case value_type::boolean: return 1;
    case value_type::u16: case value_type::i16: return 2;
    case value_type::u32: case value_type::i32: case value_type::f32: return 4;
    case value_type::u64: case value_type::i64: case value_type::f64: return 8;
    case value_type::string: return 8;   // the length
    case value_type::array: return 12;   // element type + count
  }
  return 1;
}

std::string quoted(std::string_view s) {
  std::string out;  // built by appends: "'" + std::string(s) trips a GCC 12 -Wrestrict false positive
  out.reserve(s.size() + 2);
  out += '\'';
  out += s;
  out += '\'';
  return out;
}

// Bounds-checked cursor over the mapping. `context_` names what is being read so a truncation error
// says where the file ends ("metadata key 12 ('tokenizer.ggml.tokens')").
class reader {
 public:
  reader(const uint8_t* base, uint64_t size, const std::string& path) : base_(base), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void set_context(std::string context) { context_ = std::move(context); }
  const std::string& context() const { return context_; }

  [[noreturn]] void fail(const std::string& message) const { throw gguf_error(path_ + ": " + message); }

  [[noreturn]] void truncated() const {
    fail("truncated file: " + context_ + " ends past the end of the file (" + std::to_string(size_) +
         " bytes)");
  }

  void require(uint64_t n) const {
    if (n > remaining()) truncated();
  }

  template <class T>
  T read() {
    require(sizeof(T));
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string() {
    const auto length = read<uint64_t>();
    require(length);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), size_t(length));
    pos_ += length;
    return s;
  }

  // Rejects `count` items of at least `min_bytes` each when the rest of the file cannot hold them.
  void require_items(uint64_t count, uint64_t min_bytes) const {
    if (count > remaining() / min_bytes) truncated();
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
  std::string context_;
};

value read_value(reader& in, value_type type, std::string_view key, int depth);

[[noreturn]] void unknown_value_type(reader& in, uint32_t type_id, std::string_view key) {
  in.fail("unknown metadata value type " + std::to_string(type_id) + " for key " + quoted(key));
}

value read_array(reader& in, std::string_view key, int depth) {
  if (depth >= k_max_array_depth) {
    in.fail("metadata key " + quoted(key) + " nests arrays deeper than " + std::to_string(k_max_array_depth));
  }
  const auto element_id = in.read<uint32_t>();
  if (!is_known_value_type(element_id)) unknown_value_type(in, element_id, key);
  const auto element_type = static_cast<value_type>(element_id);
  const auto count = in.read<uint64_t>();
  in.require_items(count, min_value_bytes(element_type));
  std::vector<value> items;
  // A plausible-looking corrupt count would still reserve ~48 bytes per file byte; grow past a cap instead.
  items.reserve(size_t(std::min<uint64_t>(count, k_max_reserve)));
  for (uint64_t i = 0; i < count; ++i) items.push_back(read_value(in, element_type, key, depth + 1));
  value v;
  v.type = value_type::array;
  v.element_type = element_type;
  v.data = std::move(items);
  return v;
}

value read_value(reader& in, value_type type, std::string_view key, int depth) {
  value v;
  v.type = type;
  switch (type) {
    case value_type::u8: v.data = uint64_t{in.read<uint8_t>()}; break;
    case value_type::u16: v.data = uint64_t{in.read<uint16_t>()}; break;
    case value_type::u32: v.data = uint64_t{in.read<uint32_t>()}; break;
    case value_type::u64: v.data = uint64_t{in.read<uint64_t>()}; break;
    case value_type::i8: v.data = int64_t{in.read<int8_t>()}; break;
    case value_type::i16: v.data = int64_t{in.read<int16_t>()}; break;
    case value_type::i32: v.data = int64_t{in.read<int32_t>()}; break;
    case value_type::i64: v.data = int64_t{in.read<int64_t>()}; break;
    case value_type::f32: v.data = double{in.read<float>()}; break;
    case value_type::f64: v.data = in.read<double>(); break;
    case value_type::boolean: v.data = in.read<uint8_t>() != 0; break;
    case value_type::string: v.data = in.read_string(); break;
    case value_type::array: return read_array(in, key, depth);
  }
  return v;
}

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

std::string type_description(const value& v) {
  std::string s = value_type_name(v.type);
  if (v.type == value_type::array) s += std::string(" of ") + value_type_name(v.element_type);
  return s;
}

[[noreturn]] void wrong_type(std::string_view what, const value& v, std::string_view expected) {
  throw gguf_error("metadata key " + quoted(what) + " has type " + type_description(v) + ", expected " +
                   std::string(expected));
}

// Elements of a typed array, converted one by one; throws naming the key when the element type is wrong.
template <class T, class Convert>
std::vector<T> convert_array(const value& v, std::string_view key, bool element_ok, std::string_view expected,
                             Convert convert) {
  if (v.type != value_type::array || !element_ok) wrong_type(key, v, expected);
  const auto& items = v.as_array(key);
  std::vector<T> out;
  out.reserve(items.size());
  for (const auto& item : items) out.push_back(convert(item));
  return out;
}

}  // namespace

const char* value_type_name(value_type t) {
  switch (t) {
    case value_type::u8: return "u8";
    case value_type::i8: return "i8";
    case value_type::u16: return "u16";
    case value_type::i16: return "i16";
    case value_type::u32: return "u32";
    case value_type::i32: return "i32";
    case value_type::f32: return "f32";
    case value_type::boolean: return "bool";
    case value_type::string: return "string";
    case value_type::array: return "array";
    case value_type::u64: return "u64";
    case value_type::i64: return "i64";
    case value_type::f64: return "f64";
  }
  return "unknown";
}

// ---- value ----

bool value::is_integer() const {
  return std::holds_alternative<uint64_t>(data) || std::holds_alternative<int64_t>(data);
}

bool value::is_float() const { return std::holds_alternative<double>(data); }

uint64_t value::as_uint(std::string_view what) const {
  if (const auto* u = std::get_if<uint64_t>(&data)) return *u;
  if (const auto* i = std::get_if<int64_t>(&data)) {
    if (*i < 0) {
      throw gguf_error("metadata key " + quoted(what) + " is negative (" + std::to_string(*i) +
                       "), expected an unsigned integer");
    }
    return uint64_t(*i);
  }
  wrong_type(what, *this, "an integer");
}

int64_t value::as_int(std::string_view what) const {
  if (const auto* i = std::get_if<int64_t>(&data)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&data)) {
    if (*u > uint64_t(std::numeric_limits<int64_t>::max())) {
      throw gguf_error("metadata key " + quoted(what) + " value " + std::to_string(*u) +
                       " does not fit a signed 64-bit integer");
    }
    return int64_t(*u);
  }
  wrong_type(what, *this, "an integer");
}

double value::as_float(std::string_view what) const {
  if (const auto* d = std::get_if<double>(&data)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&data)) return double(*u);
  if (const auto* i = std::get_if<int64_t>(&data)) return double(*i);
  wrong_type(what, *this, "a number");
}

bool value::as_bool(std::string_view what) const {
  if (const auto* b = std::get_if<bool>(&data)) return *b;
  wrong_type(what, *this, "a bool");
}

const std::string& value::as_string(std::string_view what) const {
  if (const auto* s = std::get_if<std::string>(&data)) return *s;
  wrong_type(what, *this, "a string");
}

const std::vector<value>& value::as_array(std::string_view what) const {
  if (const auto* a = std::get_if<std::vector<value>>(&data)) return *a;
  wrong_type(what, *this, "an array");
}

// ---- tensor_info ----

uint64_t tensor_info::rows() const {
  uint64_t n = 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}

uint64_t tensor_info::row_bytes() const { return dims.empty() ? 0 : inflight::row_bytes(type, dims[0]); }

// ---- gguf_file ----

std::shared_ptr<const gguf_file> gguf_file::open(const std::string& path) {
  std::shared_ptr<gguf_file> file(new gguf_file());
  file->path_ = path;
  file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd_ < 0) throw gguf_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(file->fd_, &st) != 0) throw gguf_error(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw gguf_error(path + ": not a regular file");
  file->size_ = uint64_t(st.st_size);
  // mmap rejects a zero length; an empty file is then reported as truncated by parse().
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, size_t(file->size_), PROT_READ, MAP_PRIVATE, file->fd_, 0);
    if (p == MAP_FAILED) throw gguf_error(path + ": cannot map: " + std::strerror(errno));
    file->base_ = static_cast<const uint8_t*>(p);
  }
  file->parse();
  return file;
}

gguf_file::~gguf_file() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_t(size_));
  if (fd_ >= 0) ::close(fd_);
}

void gguf_file::parse() {
  reader in(base_, size_, path_);

  in.set_context("header");
  const auto magic = in.read<uint32_t>();
  if (magic != k_magic) {
    char shown[5] = {};
    std::memcpy(shown, &magic, 4);
    for (char& c : shown) {
      if (c != 0 && (c < 0x20 || c > 0x7e)) c = '?';
    }
    in.fail("bad magic '" + std::string(shown) + "' (not a GGUF file)");
  }
  version_ = in.read<uint32_t>();
  if (version_ != 2 && version_ != 3) {
    // A big-endian GGUF reads as 0x03000000 here; say so rather than leave a puzzling number.
    const bool byte_swapped = version_ == 0x02000000u || version_ == 0x03000000u;
    in.fail("unsupported GGUF version " + std::to_string(version_) + " (supported: 2, 3)" +
            (byte_swapped ? "; the file looks big-endian" : ""));
  }
  const auto tensor_count = in.read<uint64_t>();
  const auto kv_count = in.read<uint64_t>();
  // Checked against the bytes left before reserving anything: both counts come from an untrusted file.
  if (kv_count > in.remaining() / k_min_kv_bytes) {
    in.fail("metadata count " + std::to_string(kv_count) + " is impossible for a file of " +
            std::to_string(size_) + " bytes (truncated or corrupt file)");
  }
  if (tensor_count > in.remaining() / k_min_tensor_info_bytes) {
    in.fail("tensor count " + std::to_string(tensor_count) + " is impossible for a file of " +
            std::to_string(size_) + " bytes (truncated or corrupt file)");
  }

  // Metadata.
  metadata_.reserve(size_t(std::min<uint64_t>(kv_count, k_max_reserve)));
  std::unordered_set<std::string_view> keys;
  for (uint64_t i = 0; i < kv_count; ++i) {
    const std::string index = "metadata key " + std::to_string(i);
    in.set_context(index);
    std::string key = in.read_string();
    in.set_context(index + " (" + quoted(key) + ")");
    const auto type_id = in.read<uint32_t>();
    if (!is_known_value_type(type_id)) unknown_value_type(in, type_id, key);
    value v = read_value(in, static_cast<value_type>(type_id), key, 0);
    metadata_.push_back({std::move(key), std::move(v)});
  }
  // Keys are checked after the vector stops growing: the set holds views into its strings.
  for (const auto& entry : metadata_) {
    if (!keys.insert(entry.key).second) in.fail("duplicate metadata key " + quoted(entry.key));
  }

  if (const value* a = find("general.alignment")) {
    if (!a->is_integer()) {
      in.fail("metadata key 'general.alignment' has type " + type_description(*a) + ", expected an integer");
    }
    const bool negative = std::holds_alternative<int64_t>(a->data) && std::get<int64_t>(a->data) < 0;
    const uint64_t alignment = negative ? 0 : a->as_uint("general.alignment");
    if (!is_power_of_two(alignment)) {
      in.fail("general.alignment " + to_display_string(*a) + " is not a nonzero power of two");
    }
    alignment_ = alignment;
  } else {
    alignment_ = k_default_alignment;
  }

  // Tensor infos.
  tensors_.reserve(size_t(std::min<uint64_t>(tensor_count, k_max_reserve)));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const std::string index = "tensor info " + std::to_string(i);
    in.set_context(index);
    tensor_info t;
    t.name = in.read_string();
    in.set_context(index + " (" + quoted(t.name) + ")");
    const auto n_dims = in.read<uint32_t>();
    if (n_dims < 1 || n_dims > k_max_dims) {
      in.fail("tensor " + quoted(t.name) + " has " + std::to_string(n_dims) + " dimensions (expected 1 to " +
              std::to_string(k_max_dims) + ")");
    }
    for (uint32_t d = 0; d < n_dims; ++d) t.dims.push_back(in.read<uint64_t>());
    const auto type_id = in.read<uint32_t>();
    t.offset = in.read<uint64_t>();
    const ggml_type_traits* traits = find_type_traits(type_id);
    if (traits == nullptr) {
      in.fail("tensor " + quoted(t.name) + " has unsupported type " + std::to_string(type_id));
    }
    t.type = static_cast<ggml_type>(type_id);
    if (t.offset % alignment_ != 0) {
      in.fail("tensor " + quoted(t.name) + " has offset " + std::to_string(t.offset) +
              ", not a multiple of the alignment " + std::to_string(alignment_));
    }
    if (t.dims[0] % traits->block_elements != 0) {
      in.fail("tensor " + quoted(t.name) + " has a row of " + std::to_string(t.dims[0]) +
              " values, not a multiple of the " + traits->name + " block size " +
              std::to_string(traits->block_elements));
    }
    // Elements and bytes, with overflow checks: the dims are untrusted.
    uint64_t elements = 1;
    for (uint64_t dim : t.dims) {
      if (dim != 0 && elements > std::numeric_limits<uint64_t>::max() / dim) {
        in.fail("tensor " + quoted(t.name) + " has too many elements");
      }
      elements *= dim;
    }
    t.num_elements = elements;
    const uint64_t blocks = elements / traits->block_elements;
    if (blocks != 0 && traits->block_bytes > std::numeric_limits<uint64_t>::max() / blocks) {
      in.fail("tensor " + quoted(t.name) + " has too many elements");
    }
    t.num_bytes = blocks * traits->block_bytes;
    tensors_.push_back(std::move(t));
  }

  // Data section: the end of the tensor infos rounded up to the alignment (which may lie past the end
  // of a file without tensor data; then every nonempty tensor fails the range check below).
  const uint64_t end_of_infos = in.pos();
  const uint64_t padding = (alignment_ - end_of_infos % alignment_) % alignment_;
  data_offset_ = end_of_infos + padding;  // cannot overflow: end_of_infos <= size_ < 2^63

  std::unordered_set<std::string_view> names;
  for (auto& t : tensors_) {
    if (!names.insert(t.name).second) in.fail("duplicate tensor name " + quoted(t.name));
    const bool inside = data_offset_ <= size_ && t.offset <= size_ - data_offset_ &&
                        t.num_bytes <= size_ - data_offset_ - t.offset;
    if (!inside) {
      // The printed range saturates rather than wraps for absurd offsets.
      const uint64_t begin = t.offset > std::numeric_limits<uint64_t>::max() - data_offset_
                                 ? std::numeric_limits<uint64_t>::max()
                                 : data_offset_ + t.offset;
      const uint64_t end = t.num_bytes > std::numeric_limits<uint64_t>::max() - begin
                               ? std::numeric_limits<uint64_t>::max()
                               : begin + t.num_bytes;
      in.fail("tensor " + quoted(t.name) + " (bytes " + std::to_string(begin) + ".." + std::to_string(end) +
              ") lies outside the file (" + std::to_string(size_) + " bytes)");
    }
    t.data = base_ + data_offset_ + t.offset;
  }
}

const value* gguf_file::find(std::string_view key) const {
  for (const auto& entry : metadata_) {
    if (entry.key == key) return &entry.val;
  }
  return nullptr;
}

const value& gguf_file::get(std::string_view key) const {
  if (const value* v = find(key)) return *v;
  throw gguf_error(path_ + ": missing required key " + quoted(key));
}

uint64_t gguf_file::get_uint(std::string_view key) const { return get(key).as_uint(key); }
double gguf_file::get_float(std::string_view key) const { return get(key).as_float(key); }
bool gguf_file::get_bool(std::string_view key) const { return get(key).as_bool(key); }
const std::string& gguf_file::get_string(std::string_view key) const { return get(key).as_string(key); }

std::optional<uint64_t> gguf_file::find_uint(std::string_view key) const {
  const value* v = find(key);
  return v ? std::optional<uint64_t>(v->as_uint(key)) : std::nullopt;
}

std::optional<double> gguf_file::find_float(std::string_view key) const {
  const value* v = find(key);
  return v ? std::optional<double>(v->as_float(key)) : std::nullopt;
}

std::optional<bool> gguf_file::find_bool(std::string_view key) const {
  const value* v = find(key);
  return v ? std::optional<bool>(v->as_bool(key)) : std::nullopt;
}

std::optional<std::string> gguf_file::find_string(std::string_view key) const {
  const value* v = find(key);
  return v ? std::optional<std::string>(v->as_string(key)) : std::nullopt;
}

std::vector<std::string> gguf_file::get_string_array(std::string_view key) const {
  const value& v = get(key);
  return convert_array<std::string>(v, key, v.element_type == value_type::string, "an array of strings",
                                    [&](const value& item) { return item.as_string(key); });
}

std::vector<int64_t> gguf_file::get_int_array(std::string_view key) const {
  const value& v = get(key);
  const bool integer_elements = v.element_type != value_type::f32 && v.element_type != value_type::f64 &&
                                v.element_type != value_type::boolean &&
                                v.element_type != value_type::string && v.element_type != value_type::array;
  return convert_array<int64_t>(v, key, integer_elements, "an array of integers",
                                [&](const value& item) { return item.as_int(key); });
}

std::vector<double> gguf_file::get_float_array(std::string_view key) const {
  const value& v = get(key);
  const bool numeric_elements = v.element_type != value_type::boolean && v.element_type != value_type::string &&
                                v.element_type != value_type::array;
  return convert_array<double>(v, key, numeric_elements, "an array of numbers",
                               [&](const value& item) { return item.as_float(key); });
}

const tensor_info* gguf_file::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const tensor_info& gguf_file::tensor(std::string_view name) const {
  if (const tensor_info* t = find_tensor(name)) return *t;
  throw gguf_error(path_ + ": missing tensor " + quoted(name));
}

// ---- display ----

namespace {

void append_quoted(std::string& out, std::string_view s, size_t max_string) {
  size_t cut = s.size();
  if (cut > max_string) {
    cut = max_string;
    // Back off to a UTF-8 character boundary so the shown prefix stays valid text.
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80) --cut;
  }
  out += '"';
  for (char c : s.substr(0, cut)) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          static constexpr char hex[] = "0123456789abcdef";
          out += "\\x";
          out += hex[(static_cast<unsigned char>(c) >> 4) & 15];
          out += hex[static_cast<unsigned char>(c) & 15];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  if (cut < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
}

template <class T>
void append_number(std::string& out, T x) {
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, x);
  out.append(buf, result.ptr);
}

void append_display(std::string& out, const value& v, size_t max_items, size_t max_string) {
  switch (v.type) {
    case value_type::string: return append_quoted(out, std::get<std::string>(v.data), max_string);
    case value_type::boolean: out += std::get<bool>(v.data) ? "true" : "false"; return;
    // An f32 is printed as a float so 1e-05 does not come out as 9.999999747378752e-06.
    case value_type::f32: return append_number(out, static_cast<float>(std::get<double>(v.data)));
    case value_type::f64: return append_number(out, std::get<double>(v.data));
    case value_type::array: {
      const auto& items = std::get<std::vector<value>>(v.data);
      out += '[';
      const size_t shown = std::min(items.size(), max_items);
      for (size_t i = 0; i < shown; ++i) {
        if (i > 0) out += ", ";
        append_display(out, items[i], max_items, max_string);
      }
      if (shown < items.size()) out += (shown > 0 ? ", ... (" : "... (") + std::to_string(items.size()) + " items)";
      out += ']';
      return;
    }
    default:
      if (const auto* u = std::get_if<uint64_t>(&v.data)) return append_number(out, *u);
      if (const auto* i = std::get_if<int64_t>(&v.data)) return append_number(out, *i);
      return;
  }
}

}  // namespace

std::string to_display_string(const value& v, size_t max_items, size_t max_string) {
  std::string out;
  append_display(out, v, max_items, max_string);
  return out;
}

}  // namespace inflight::gguf
