// tools/atomic_file.cpp: a file appears whole, replaces the old one in one step, and a failed write
// leaves the old file as it was and no temporary behind.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "atomic_file.hpp"

namespace fs = std::filesystem;

namespace {

std::string contents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct temporary_directory {
  fs::path path = fs::temp_directory_path() / ("inflight-atomic-" + std::to_string(getpid()));
  temporary_directory() { fs::create_directories(path); }
  ~temporary_directory() {
    fs::permissions(path, fs::perms::owner_all);
    fs::remove_all(path);
  }
  size_t entries() const { return size_t(std::distance(fs::directory_iterator(path), fs::directory_iterator())); }
};

}  // namespace

TEST_CASE("a file is written whole, replaces the old one, and leaves no temporary") {
  temporary_directory dir;
  const fs::path target = dir.path / "result.json";
  inflight::cli::write_file_atomically(target, "{\"first\": 1}\n");
  CHECK(contents(target) == "{\"first\": 1}\n");
  const std::string big(3 << 20, 'x');  // several write() calls
  inflight::cli::write_file_atomically(target, big);
  CHECK(contents(target) == big);
  CHECK(dir.entries() == 1);
}

TEST_CASE("a write that fails names the path and leaves the old file as it was") {
  temporary_directory dir;
  const fs::path target = dir.path / "result.json";
  inflight::cli::write_file_atomically(target, "old");
  if (geteuid() == 0) {
    // root writes into read-only directories: make the rename fail instead (a directory in the way).
    const fs::path blocked = dir.path / "blocked";
    fs::create_directories(blocked / "inside");
    CHECK_THROWS_WITH_AS(inflight::cli::write_file_atomically(blocked, "new"),
                         doctest::Contains((blocked.string() + ": rename").c_str()), std::runtime_error);
    CHECK(fs::is_directory(blocked / "inside"));
    CHECK(dir.entries() == 2);  // result.json and blocked/: no temporary left
  } else {
    fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
    CHECK_THROWS_WITH_AS(inflight::cli::write_file_atomically(target, "new"),
                         doctest::Contains((target.string() + ": open").c_str()), std::runtime_error);
    fs::permissions(dir.path, fs::perms::owner_all);
    CHECK(dir.entries() == 1);
  }
  CHECK(contents(target) == "old");
}
