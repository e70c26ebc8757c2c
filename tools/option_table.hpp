// The options of a long-running command (`inflight serve`, `inflight node`) through CAF's configuration
// system (docs/caf-0.17.md §5), with the checks CAF 0.17 leaves out. Included by option_table.cpp and by the
// files that declare a command's options (serve_config.cpp, node_config.cpp) only: it brings in CAF.
//
// CAF declares the options (an actor_system_config subclass, category "global": the command line says
// --port, a config file says port=... under [global]), parses the config file, parses each command-line
// value by its option's type, and type-checks the values of the file. Where CAF 0.17 falls short of what
// a server's users need, this table steps in:
//  - CAF ignores unknown keys, unknown sections and values of the wrong type in a config file without a
//    word (docs/caf-0.17.md §9.6), and keeps the first of two values for one key. We read the file
//    untyped, check every key and value ourselves and refuse the file, naming the key.
//  - CAF's own command-line parser wants --name=value (our users type --name value), refuses
//    --flag=false, keeps only the last of several list values, and calls an empty string missing. So we
//    split the command line ourselves and give each value to its option's own CAF parser.
//  - Ranges (port 0..65535, positive sizes), allowed words (--batching) and units (KiB, seconds) are
//    ours: each option has an entry in the table that checks a parsed value and stores it into the
//    command's settings.
// Precedence: command line > config file > built-in defaults (the settings' initializers).
#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/config_option.hpp>
#include <caf/config_value.hpp>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cli_options.hpp"

namespace inflight::cli {

// What an option holds; decides how the command line passes its value and how errors describe it.
enum class option_kind {
  integer,  // CAF type int64; the table narrows it to the field's range
  real,     // CAF type double; the table checks its range
  text,     // CAF type string; on the command line taken as typed (CAF would strip quotes)
  choice,   // a string from a fixed set of words
  flag,     // CAF type boolean: --name, --no-name, --name=false; true/false in a file
  list,     // CAF type list of strings: repeatable and comma-separated on the command line
};

// One option: its name (--name on the command line, the key in a config file), how --help shows it,
// and how a value CAF has parsed and type-checked is checked further, stored and read back.
struct option_spec {
  std::string name;
  option_kind kind;
  std::string metavar;  // "N", "PATH", ...; empty for a flag
  std::string help;
  std::string group;  // heading in --help
  // What is wrong with a value of the right type ("" when nothing is): ranges, allowed words, emptiness.
  std::function<std::string(const caf::config_value&)> problem;
  std::function<void(const caf::config_value&)> store;  // the value into the settings
  std::function<caf::config_value()> load;               // the current value from the settings
};

// The options of one command, declared to CAF and described for the rest of the table. The settings its
// declarations refer to must outlive it.
class option_table : public caf::actor_system_config {
 public:
  explicit option_table(std::string command) : command_(std::move(command)) {}

  const std::string& command() const { return command_; }
  const std::vector<option_spec>& specs() const { return specs_; }
  const option_spec* find(std::string_view name) const;
  // CAF's record of an option: its type, its parser and its type check.
  const caf::config_option& caf_option(const option_spec& spec) const;
  // Options given in the config file or on the command line (not left at their defaults).
  const std::set<std::string>& set_options() const { return set_; }
  void mark_set(const std::string& name) { set_.insert(name); }

  // Declarations, in --help order; `group` starts a heading.
  void group(std::string title) { group_ = std::move(title); }
  void integer(const char* name, const char* help, int64_t min, int64_t max, std::function<int64_t()> get,
               std::function<void(int64_t)> set);
  // An integer field of any width; the range check keeps the value inside it.
  template <class Int>
  void integer(const char* name, const char* help, int64_t min, int64_t max, Int& field) {
    integer(name, help, min, max, [&field] { return int64_t(field); }, [&field](int64_t n) { field = Int(n); });
  }
  // An integer count of a std::chrono duration (milliseconds, seconds, ...).
  template <class Duration>
  void duration(const char* name, const char* help, int64_t min, int64_t max, Duration& field) {
    integer(name, help, min, max, [&field] { return int64_t(field.count()); }, [&field](int64_t n) { field = Duration(n); });
  }
  void real(const char* name, const char* help, double min, double max, double& field);  // in (min, max]
  void text(const char* name, const char* metavar, const char* help, std::string& field, bool may_be_empty);
  void choice(const char* name, const char* metavar, const char* help, std::vector<std::string> words,
              std::function<std::string()> get, std::function<void(const std::string&)> set);
  void flag(const char* name, const char* help, bool& field);
  void list(const char* name, const char* metavar, const char* help, std::vector<std::string>& field);

 private:
  template <class CafType>
  void declare(option_spec spec);

  std::string command_;
  std::vector<option_spec> specs_;
  std::string group_;
  std::set<std::string> set_;
};

// Reads the command line (argv[0] is the command's name) and the config file it names into the table's
// settings. Throws usage_error naming the bad option, file or key. Returns whether --dump-config was given.
bool load_options(option_table& table, int argc, char** argv);

// `intro` followed by every option, its INI key and its default (the table's settings are the defaults).
std::string options_help(const option_table& table, const char* intro);

// The table's settings as a config file that load_options reads back to the same settings (--dump-config).
std::string options_to_ini(const option_table& table);

}  // namespace inflight::cli
