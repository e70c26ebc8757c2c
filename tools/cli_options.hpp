// A small command-line option reader for the subcommands: `--name value` or `--name=value`, typed
// conversions, and errors that name the option ("--max-tokens: expected an integer, got 'abc'").
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace inflight::cli {

class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class option_reader {
 public:
  option_reader(int argc, char** argv) : args_(argv + 1, argv + argc) {}

  bool done() const { return index_ >= args_.size(); }
  // The next option's name without leading dashes ("max-tokens"); throws for a positional argument.
  std::string next_name() {
    std::string_view arg = args_[index_++];
    if (arg.size() < 3 || arg.substr(0, 2) != "--") throw usage_error("unexpected argument '" + std::string(arg) + "'");
    arg.remove_prefix(2);
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      inline_value_ = std::string(arg.substr(eq + 1));
      has_inline_value_ = true;
      current_ = std::string(arg.substr(0, eq));
    } else {
      has_inline_value_ = false;
      current_ = std::string(arg);
    }
    return current_;
  }
  // A flag takes no value.
  void flag() const {
    if (has_inline_value_) throw usage_error("--" + current_ + " takes no value");
  }
  std::string string_value() {
    if (has_inline_value_) return inline_value_;
    if (done()) throw usage_error("--" + current_ + " needs a value");
    return args_[index_++];
  }
  int64_t int_value(int64_t min, int64_t max) {
    const std::string text = string_value();
    size_t used = 0;
    int64_t value = 0;
    try { value = std::stoll(text, &used); } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != text.size()) throw usage_error("--" + current_ + ": expected an integer, got '" + text + "'");
    if (value < min || value > max) {
      throw usage_error("--" + current_ + ": " + text + " is outside [" + std::to_string(min) + ", " +
                        std::to_string(max) + "]");
    }
    return value;
  }
  double float_value() {
    const std::string text = string_value();
    size_t used = 0;
    double value = 0;
    try { value = std::stod(text, &used); } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != text.size()) throw usage_error("--" + current_ + ": expected a number, got '" + text + "'");
    return value;
  }

 private:
  std::vector<std::string> args_;
  size_t index_ = 0;
  std::string current_, inline_value_;
  bool has_inline_value_ = false;
};

}  // namespace inflight::cli
