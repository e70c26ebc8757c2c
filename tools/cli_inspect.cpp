// `inflight inspect MODEL [--all-metadata]`: what a GGUF file holds — header, every metadata key, the
// tensor table and totals. Only the GGUF reader is used, so it works on files the model code cannot run.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <exception>
#include <limits>
#include <map>
#include <string>
#include <string_view>

#include "cli_commands.hpp"
#include "inflight/gguf.hpp"

namespace inflight::cli {
namespace {

constexpr const char* k_usage =
    "usage: inflight inspect MODEL [--all-metadata]\n"
    "  Prints a GGUF file's header, metadata and tensor table.\n"
    "  --all-metadata  print arrays and strings in full instead of abbreviated\n";

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = double(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return buf;
}

std::string human_count(uint64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2f B", double(n) / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2f M", double(n) / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.2f K", double(n) / 1e3);
  else std::snprintf(buf, sizeof buf, "%" PRIu64, n);
  return buf;
}

// "string", "u32", "array[string]", "array[array]" (nested arrays show their own types in the value).
std::string type_label(const gguf::value& v) {
  std::string label = gguf::value_type_name(v.type);
  if (v.type == gguf::value_type::array) label += std::string("[") + gguf::value_type_name(v.element_type) + "]";
  return label;
}

std::string dims_label(const gguf::tensor_info& t) {
  std::string label;
  for (size_t i = 0; i < t.dims.size(); ++i) {
    if (i > 0) label += " x ";
    label += std::to_string(t.dims[i]);
  }
  return label;
}

void print_header(const gguf::gguf_file& file) {
  std::printf("file:         %s\n", file.path().c_str());
  std::printf("GGUF version: %u\n", file.version());
  std::printf("alignment:    %" PRIu64 "\n", file.alignment());
  std::printf("file size:    %" PRIu64 " bytes (%s)\n", file.file_size(), human_bytes(file.file_size()).c_str());
  std::printf("data offset:  %" PRIu64 "\n", file.data_offset());
  std::printf("metadata:     %zu keys\n", file.metadata().size());
  std::printf("tensors:      %zu\n", file.tensors().size());
}

void print_metadata(const gguf::gguf_file& file, bool all) {
  // Abbreviated by default: the tokenizer arrays alone hold ~100k strings.
  const size_t max_items = all ? std::numeric_limits<size_t>::max() : 8;
  const size_t max_string = all ? std::numeric_limits<size_t>::max() : 120;
  size_t key_width = 3;
  size_t type_width = 4;
  for (const auto& entry : file.metadata()) {
    key_width = std::max(key_width, entry.key.size());
    type_width = std::max(type_width, type_label(entry.val).size());
  }
  std::printf("\nmetadata:\n");
  std::printf("  %-*s  %-*s  %s\n", int(key_width), "key", int(type_width), "type", "value");
  for (const auto& entry : file.metadata()) {
    const std::string shown = gguf::to_display_string(entry.val, max_items, max_string);
    std::printf("  %-*s  %-*s  %s\n", int(key_width), entry.key.c_str(), int(type_width),
                type_label(entry.val).c_str(), shown.c_str());
  }
}

struct type_total {
  uint64_t tensors = 0;
  uint64_t elements = 0;
  uint64_t bytes = 0;
};

void print_tensors(const gguf::gguf_file& file) {
  size_t name_width = 4;
  size_t dims_width = 4;
  for (const auto& t : file.tensors()) {
    name_width = std::max(name_width, t.name.size());
    dims_width = std::max(dims_width, dims_label(t).size());
  }
  std::printf("\ntensors:\n");
  std::printf("  %-*s  %-5s  %-*s  %12s  %12s\n", int(name_width), "name", "type", int(dims_width), "dims",
              "bytes", "offset");
  std::map<uint32_t, type_total> totals;  // keyed by ggml type id, so the summary comes in a stable order
  uint64_t parameters = 0;
  uint64_t bytes = 0;
  for (const auto& t : file.tensors()) {
    const char* type_name = type_traits(t.type).name;
    std::printf("  %-*s  %-5s  %-*s  %12" PRIu64 "  %12" PRIu64 "\n", int(name_width), t.name.c_str(), type_name,
                int(dims_width), dims_label(t).c_str(), t.num_bytes, t.offset);
    auto& total = totals[static_cast<uint32_t>(t.type)];
    ++total.tensors;
    total.elements += t.num_elements;
    total.bytes += t.num_bytes;
    parameters += t.num_elements;
    bytes += t.num_bytes;
  }

  std::printf("\ntotals:\n");
  std::printf("  parameters:  %" PRIu64 " (%s)\n", parameters, human_count(parameters).c_str());
  std::printf("  tensor data: %" PRIu64 " bytes (%s)\n", bytes, human_bytes(bytes).c_str());
  for (const auto& [type_id, total] : totals) {
    const double bits_per_weight = total.elements ? 8.0 * double(total.bytes) / double(total.elements) : 0.0;
    std::printf("  %-5s  %4" PRIu64 " tensors  %12" PRIu64 " parameters  %12" PRIu64 " bytes (%s, %.2f bits/weight)\n",
                type_traits(static_cast<ggml_type>(type_id)).name, total.tensors, total.elements, total.bytes,
                human_bytes(total.bytes).c_str(), bits_per_weight);
  }
}

}  // namespace

int run_inspect(int argc, char** argv) {
  std::string model_path;
  bool all_metadata = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(k_usage, stdout);
      return 0;
    }
    if (arg == "--all-metadata") {
      all_metadata = true;
    } else if (arg.size() > 1 && arg[0] == '-') {
      std::fprintf(stderr, "inflight inspect: unknown option '%s'\n%s", argv[i], k_usage);
      return 2;
    } else if (model_path.empty()) {
      model_path = arg;
    } else {
      std::fprintf(stderr, "inflight inspect: more than one MODEL given\n%s", k_usage);
      return 2;
    }
  }
  if (model_path.empty()) {
    std::fputs(k_usage, stderr);
    return 2;
  }

  try {
    const auto file = gguf::gguf_file::open(model_path);
    print_header(*file);
    print_metadata(*file, all_metadata);
    print_tensors(*file);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "inflight inspect: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace inflight::cli
