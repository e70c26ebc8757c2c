// Fuzz target: the config file reader (`inflight serve --config-file`, `inflight node --config-file`): CAF
// parses the INI text, option_table.cpp checks every key and value. The first byte picks the command,
// the rest is the file. A bad file must be refused with a usage_error naming the problem; a file that is
// accepted must read back to the same settings from what --dump-config writes of it.
//
// Under libFuzzer it links a CAF built by clang (tools/fuzz.sh builds one with tools/build_caf.sh fuzz):
// against Debian's g++-built libcaf, every CAF option would have a null check function.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cli_options.hpp"
#include "node_config.hpp"
#include "serve_config.hpp"

using namespace inflight::cli;

namespace {

std::string write_memory_file(int& fd, const void* data, size_t size) {
  if (fd < 0) fd = memfd_create("fuzz.ini", 0);
  if (fd < 0 || ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != ssize_t(size)) std::abort();
  return "--config-file=/proc/self/fd/" + std::to_string(fd);
}

template <class Load, class Dump>
void load_and_read_back(const char* command, const std::string& file_option, Load load, Dump dump) {
  std::string option = file_option;
  char* argv[] = {const_cast<char*>(command), option.data(), nullptr};
  std::string ini;
  try {
    ini = dump(load(2, argv));
  } catch (const usage_error& error) {
    if (std::string(error.what()).empty()) std::abort();
    return;
  }
  static int dump_fd = -1;
  std::string again = write_memory_file(dump_fd, ini.data(), ini.size());
  char* argv_again[] = {const_cast<char*>(command), again.data(), nullptr};
  if (dump(load(2, argv_again)) != ini) std::abort();  // throws (a crash here) if the dump is unreadable
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static int fd = -1;
  const std::string file_option = write_memory_file(fd, data + 1, size - 1);
  const bool serve = data[0] % 2 == 0;
  if (serve)
    load_and_read_back("serve", file_option, load_serve_settings, serve_settings_to_ini);
  else
    load_and_read_back("node", file_option, load_node_settings, node_settings_to_ini);
  return 0;
}
