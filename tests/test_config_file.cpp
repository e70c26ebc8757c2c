// The config file reader of `inflight serve` and `inflight node` (tools/option_table.cpp over CAF's INI
// parser), for what the cli/ tests in CMakeLists.txt do not reach through the command line: the inputs the
// config fuzz target (tests/fuzz/fuzz_config.cpp) found, each refused with a message that says where.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "cli_options.hpp"
#include "node_config.hpp"
#include "serve_config.hpp"

using namespace inflight::cli;

namespace {

// A config file with `text` in a temporary directory, removed with the object.
class config_file {
 public:
  explicit config_file(const std::string& text) {
    char pattern[] = "/tmp/inflight-config-XXXXXX";
    const int fd = mkstemp(pattern);
    REQUIRE(fd >= 0);
    close(fd);
    path_ = pattern;
    std::ofstream(path_, std::ios::binary) << text;
  }
  ~config_file() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

serve_settings load_serve(const config_file& file) {
  std::string option = "--config-file=" + file.path();
  char command[] = "serve";
  char* argv[] = {command, option.data(), nullptr};
  return load_serve_settings(2, argv);
}

node_settings load_node(const config_file& file) {
  std::string option = "--config-file=" + file.path();
  char command[] = "node";
  char* argv[] = {command, option.data(), nullptr};
  return load_node_settings(2, argv);
}

// The message of the usage_error that `load` throws; fails the test when it throws none.
template <class Load>
std::string refusal(Load load) {
  try {
    load();
  } catch (const usage_error& error) {
    return error.what();
  }
  FAIL("the config file was accepted");
  return {};
}

}  // namespace

TEST_CASE("a duration in a config file is refused before CAF converts it (a count of seconds CAF would overflow)") {
  // Found by fuzzing: CAF 0.17 converts 706666666666s to nanoseconds without a range check (signed
  // overflow, undefined behaviour). The input as the fuzzer wrote it: a number run into the next word.
  const config_file fuzzed("port=706666666666serve: every option with its built-in default\nthreads=0\n");
  const std::string message = refusal([&] { load_serve(fuzzed); });
  CHECK(message.find(fuzzed.path() + ": line 1, column 6: 706666666666ser is a duration") == 0);

  const config_file huge("[global]\nmax-num-seqs=9223372037s\n");
  CHECK(refusal([&] { load_serve(huge); }).find("line 2, column 14: 9223372037s is a duration") != std::string::npos);
  // Every unit, signs and radixes that CAF reads as numbers; on the node's reader too.
  for (const char* value : {"10s", "5min", "3ms", "7us", "9ns", "2h", "-4s", "+4s", "0x7FFFFFFFFFs", "0b101s", "017s"}) {
    CAPTURE(value);
    const config_file file(std::string("[global]\nthreads=1\nport=") + value + "\n");
    CHECK(refusal([&] { load_serve(file); }).find(std::string("line 3, column 6: ") + value) != std::string::npos);
    CHECK(refusal([&] { load_node(file); }).find(std::string("line 3, column 6: ") + value) != std::string::npos);
  }
  const config_file in_a_list("[global]\nnode=[\"a:1\",\n  5s]\n");
  CHECK(refusal([&] { load_serve(in_a_list); }).find("line 3, column 3: 5s is a duration") != std::string::npos);
}

TEST_CASE("what only looks like a duration is read as before: strings, comments, keys and plain numbers") {
  const config_file file(
      "; a comment may say 10s or 5min\n"
      "[global]\n"
      "model-name=\"run-10s \\\" 5min\" ; 3h of tests\n"
      "port=8000\n"
      "threads=2\n"
      "api-key=[\"k1s\", \"20s\"]\n");
  const serve_settings settings = load_serve(file);
  CHECK(settings.server.model_name == "run-10s \" 5min");
  CHECK(settings.server.port == 8000);
  CHECK(settings.model.threads == 2);
  REQUIRE(settings.server.api_keys.size() == 2);
  CHECK(settings.server.api_keys[1] == "20s");
}
