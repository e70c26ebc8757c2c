// The mechanism behind option_table.hpp: declaring options to CAF, reading the command line and the config
// file with the checks CAF 0.17 leaves out, --help and --dump-config.
#include "option_table.hpp"

#include <caf/config_option_adder.hpp>
#include <caf/config_option_set.hpp>
#include <caf/pec.hpp>
#include <caf/settings.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <utility>

namespace inflight::cli {

namespace {

// How an error message describes the type an option wants, in the syntax of where the value came from.
std::string expected_on_command_line(option_kind kind) {
  switch (kind) {
    case option_kind::integer: return "an integer";
    case option_kind::real: return "a number";
    case option_kind::flag: return "true or false";
    case option_kind::list: return "KEY, a comma list KEY1,KEY2 or a list [\"KEY1\", \"KEY2\"]";
    case option_kind::text:
    case option_kind::choice: return "a string";
  }
  return "a value";
}

std::string expected_in_file(option_kind kind) {
  switch (kind) {
    case option_kind::integer: return "an integer";
    case option_kind::real: return "a number like 0.9";
    case option_kind::flag: return "true or false";
    case option_kind::list: return "a list of strings like [\"a\", \"b\"]";
    case option_kind::text:
    case option_kind::choice: return "a string in double quotes";
  }
  return "a value";
}

}  // namespace

const option_spec* option_table::find(std::string_view name) const {
  for (const option_spec& spec : specs_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const caf::config_option& option_table::caf_option(const option_spec& spec) const {
  return *custom_options_.qualified_name_lookup("global", spec.name);
}

// Declares the option to CAF, without storage of CAF's (the table stores), and adds it to the table.
template <class CafType>
void option_table::declare(option_spec spec) {
  opt_group{custom_options_, "global"}.add<CafType>(spec.name, spec.help);
  spec.group = group_;
  specs_.push_back(std::move(spec));
}

void option_table::integer(const char* name, const char* help, int64_t min, int64_t max,
                           std::function<int64_t()> get, std::function<void(int64_t)> set) {
  declare<int64_t>({name, option_kind::integer, "N", help, {},
                    [min, max](const caf::config_value& value) {
                      const int64_t n = caf::get<int64_t>(value);
                      if (n >= min && n <= max) return std::string();
                      return std::to_string(n) + " is outside [" + std::to_string(min) + ", " +
                             std::to_string(max) + "]";
                    },
                    [set](const caf::config_value& value) { set(caf::get<int64_t>(value)); },
                    [get] { return caf::config_value{get()}; }});
}

// A number in (min, max].
void option_table::real(const char* name, const char* help, double min, double max, double& field) {
  declare<double>({name, option_kind::real, "X", help, {},
                   [min, max](const caf::config_value& value) {
                     const double x = caf::get<double>(value);
                     if (x > min && x <= max) return std::string();
                     return std::to_string(x) + " is outside (" + std::to_string(min) + ", " + std::to_string(max) + "]";
                   },
                   [&field](const caf::config_value& value) { field = caf::get<double>(value); },
                   [&field] { return caf::config_value{field}; }});
}

void option_table::text(const char* name, const char* metavar, const char* help, std::string& field, bool may_be_empty) {
  declare<std::string>({name, option_kind::text, metavar, help, {},
                        [may_be_empty](const caf::config_value& value) {
                          return !may_be_empty && caf::get<std::string>(value).empty() ? std::string("is empty")
                                                                                        : std::string();
                        },
                        [&field](const caf::config_value& value) { field = caf::get<std::string>(value); },
                        [&field] { return caf::config_value{field}; }});
}

void option_table::choice(const char* name, const char* metavar, const char* help, std::vector<std::string> words,
                          std::function<std::string()> get, std::function<void(const std::string&)> set) {
  declare<std::string>({name, option_kind::choice, metavar, help, {},
                        [words](const caf::config_value& value) {
                          const std::string& word = caf::get<std::string>(value);
                          std::string allowed;
                          for (const std::string& w : words) {
                            if (w == word) return std::string();
                            allowed += (allowed.empty() ? "'" : " or '") + w + "'";
                          }
                          return "expected " + allowed + ", got '" + word + "'";
                        },
                        [set](const caf::config_value& value) { set(caf::get<std::string>(value)); },
                        [get] { return caf::config_value{get()}; }});
}

void option_table::flag(const char* name, const char* help, bool& field) {
  declare<bool>({name, option_kind::flag, "", help, {}, [](const caf::config_value&) { return std::string(); },
                 [&field](const caf::config_value& value) { field = caf::get<bool>(value); },
                 [&field] { return caf::config_value{field}; }});
}

void option_table::list(const char* name, const char* metavar, const char* help, std::vector<std::string>& field) {
  declare<std::vector<std::string>>(
      {name, option_kind::list, metavar, help, {},
       [](const caf::config_value& value) {
         for (const std::string& item : caf::get<std::vector<std::string>>(value)) {
           if (item.empty()) return std::string("has an empty entry");
         }
         return std::string();
       },
       [&field](const caf::config_value& value) { field = caf::get<std::vector<std::string>>(value); },
       [&field] {
         caf::config_value::list items;
         for (const std::string& item : field) items.emplace_back(item);
         return caf::config_value{std::move(items)};
       }});
}

namespace {

// Runs an option's own checks on a value of the right type; `where` names it in the message ("--port",
// "serve.ini: port").
void check_value(const option_spec& spec, const caf::config_value& value, const std::string& where) {
  if (std::string problem = spec.problem(value); !problem.empty()) throw usage_error(where + ": " + problem);
}

// ---- the command line ----

// One option as the command line spelled it; its value is parsed once the config file has been read.
struct cli_argument {
  const option_spec* spec;
  std::string spelling;  // "--port", for messages
  std::string value;     // the text after '=' or the next argument; "true"/"false" for a flag
};

struct command_line {
  std::vector<cli_argument> arguments;
  std::optional<std::string> config_file;
  bool dump_config = false;
};

// Splits argv into options and their values, accepting --name value as well as CAF's --name=value. Which
// options are flags (they take no separate value) comes from CAF's option set.
command_line split_command_line(const option_table& config, int argc, char** argv) {
  command_line result;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.size() < 3 || arg.substr(0, 2) != "--") throw usage_error("unexpected argument '" + std::string(arg) + "'");
    std::string name(arg.substr(2));
    std::optional<std::string> inline_value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    const std::string spelling = "--" + name;
    auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) throw usage_error(spelling + " needs a value");
      return argv[++i];
    };
    // --config-file is CAF's own option for the config file's path; --config is our short alias.
    if (name == "config-file" || name == "config") {
      result.config_file = value();
      continue;
    }
    if (name == "dump-config") {
      if (inline_value) throw usage_error("--dump-config takes no value");
      result.dump_config = true;
      continue;
    }
    const option_spec* spec = config.find(name);
    bool negated = false;
    // --no-NAME turns a flag off: CAF's command line has no way to, as it refuses --NAME=false.
    if (spec == nullptr && name.starts_with("no-")) {
      spec = config.find(std::string_view(name).substr(3));
      negated = spec != nullptr && config.caf_option(*spec).is_flag();
      if (!negated) spec = nullptr;
    }
    if (spec == nullptr) throw usage_error("unknown option " + spelling);
    if (negated) {
      if (inline_value) throw usage_error(spelling + " takes no value");
      result.arguments.push_back({spec, spelling, "false"});
    } else if (config.caf_option(*spec).is_flag()) {
      // A flag never takes the next argument: `--prefix-caching false` would be ambiguous.
      result.arguments.push_back({spec, spelling, inline_value.value_or("true")});
    } else {
      result.arguments.push_back({spec, spelling, value()});
    }
  }
  return result;
}

// Parses a command-line value with its option's CAF parser (strings are taken as typed) and checks it.
caf::config_value parse_cli_value(const option_table& config, const cli_argument& arg) {
  caf::config_value value;
  if (arg.spec->kind == option_kind::text || arg.spec->kind == option_kind::choice) {
    value = caf::config_value{arg.value};
  } else {
    // CAF reads an empty argument as an empty list: `--api-key ""` would silently require no key at all.
    if (arg.value.empty()) throw usage_error(arg.spelling + ": is empty");
    auto parsed = config.caf_option(*arg.spec).parse(arg.value);
    if (!parsed) {
      throw usage_error(arg.spelling + ": expected " + expected_on_command_line(arg.spec->kind) + ", got '" +
                        arg.value + "'");
    }
    value = std::move(*parsed);
  }
  check_value(*arg.spec, value, arg.spelling);
  return value;
}

// Applies the command line over whatever the defaults and the file left: the last of a repeated option
// wins, except for a list, whose occurrences add up (and replace the file's list).
void apply_command_line(option_table& config, const command_line& cli) {
  std::map<const option_spec*, caf::config_value::list> lists;
  for (const cli_argument& arg : cli.arguments) {
    caf::config_value value = parse_cli_value(config, arg);
    if (arg.spec->kind == option_kind::list) {
      auto& items = lists[arg.spec];
      for (caf::config_value& item : caf::get<caf::config_value::list>(value)) items.push_back(std::move(item));
    } else {
      arg.spec->store(value);
    }
    config.mark_set(arg.spec->name);
  }
  for (auto& [spec, items] : lists) spec->store(caf::config_value{std::move(items)});
}

// ---- the config file ----

// The config file's text. A directory would read as an empty file (no error from the stream), so it is
// refused by name.
std::string read_config_file(const std::string& path) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) throw usage_error(path + ": is a directory, not a config file");
  std::ifstream file(path, std::ios::binary);
  if (!file) throw usage_error(path + ": cannot open the config file");
  std::string text{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  if (file.bad()) throw usage_error(path + ": cannot read the config file");
  return text;
}

// "serve.ini: line 3, column 7: cannot parse the config file (unexpected_character)" from CAF's error.
std::string describe_syntax_error(const std::string& path, const caf::error& error) {
  if (error.category() != caf::atom("parser")) return path + ": " + caf::actor_system_config::render(error);
  std::string where = path;
  // CAF puts the position into the error's context as a dictionary {line, column}.
  if (error.context().match_elements<caf::settings>()) {
    const auto& position = error.context().get_as<caf::settings>(0);
    where += ": line " + std::to_string(caf::get_or(position, "line", int64_t(0))) + ", column " +
             std::to_string(caf::get_or(position, "column", int64_t(0)));
  }
  const auto code = static_cast<caf::pec>(error.code());
  where += ": cannot parse the config file (" + caf::to_string(code) + ")";
  // The likeliest cause of these two: a string without its quotes (host=0.0.0.0, batching=static).
  if (code == caf::pec::unexpected_character || code == caf::pec::trailing_character)
    where += "; strings need double quotes, as in host=\"0.0.0.0\"";
  return where;
}

// CAF 0.17's INI parser reads a number followed by u, n, m, s or h as a duration (10s, 5min, 3ms) and
// converts it to nanoseconds without checking the range: past about 292 years (706666666666s) the
// multiplication overflows, undefined behaviour (found by fuzzing, tests/fuzz/fuzz_config.cpp). No inflight
// option takes a duration, so every such value is refused here, before CAF reads the file. The scan skips
// what CAF does not read as a value: comments (';' to the end of the line) and quoted strings and atoms.
void refuse_durations(const std::string& path, const std::string& text) {
  auto is_word_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  };
  auto one_of = [](char c, std::string_view set) { return set.find(c) != std::string_view::npos; };
  int line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      line_start = i + 1;
    } else if (c == ';') {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
    } else if (c == '"' || c == '\'') {
      for (++i; i < text.size() && text[i] != c && text[i] != '\n'; ++i) {
        if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] != '\n') ++i;  // an escaped character
      }
      if (i < text.size() && text[i] == '\n') --i;  // an unclosed quote: CAF reports it; count the line
    } else if (i == 0 || !is_word_char(text[i - 1])) {
      // A number starts here: an optional sign, digits (decimal, octal, 0x hex or 0b binary).
      size_t end = i + (c == '+' || c == '-' ? 1 : 0);
      if (end >= text.size() || !std::isdigit(static_cast<unsigned char>(text[end]))) continue;
      const bool prefixed = text[end] == '0' && end + 1 < text.size() && one_of(text[end + 1], "xXbB");
      if (prefixed) end += 2;
      while (end < text.size() && std::isxdigit(static_cast<unsigned char>(text[end]))) ++end;
      if (end < text.size() && one_of(text[end], "unmsh")) {
        size_t unit_end = end;
        while (unit_end < text.size() && std::isalpha(static_cast<unsigned char>(text[unit_end])) && unit_end - end < 3)
          ++unit_end;
        throw usage_error(path + ": line " + std::to_string(line) + ", column " + std::to_string(i - line_start + 1) +
                          ": " + text.substr(i, unit_end - i) +
                          " is a duration; no inflight option takes one (numbers are plain, as in port=8000)");
      }
      i = end - 1;
    }
  }
}

// CAF keeps the first of two values for one key and drops the second without a word: an admin who
// appends `port=9000` to a file that sets port already would see no effect. So a key set twice is an
// error. CAF does not report where keys are, so this scans the lines: a key starts its line (after
// blanks) and is followed by '='. List items continued on later lines start with a quote or a digit and
// are never followed by '=', so they are not mistaken for keys.
void refuse_repeated_keys(const option_table& config, const std::string& path, const std::string& text) {
  std::istringstream file(text);
  std::map<std::string, int> first_line;
  std::string line;
  for (int number = 1; std::getline(file, line); ++number) {
    const size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos) continue;
    size_t end = start;
    while (end < line.size() && (std::isalnum(static_cast<unsigned char>(line[end])) || line[end] == '-' || line[end] == '_'))
      ++end;
    const size_t after = line.find_first_not_of(" \t", end);
    if (end == start || after == std::string::npos || line[after] != '=') continue;
    const std::string key = line.substr(start, end - start);
    if (config.find(key) == nullptr) continue;
    if (const auto [it, inserted] = first_line.emplace(key, number); !inserted) {
      throw usage_error(path + ": line " + std::to_string(number) + ": " + key + " is set twice (first on line " +
                        std::to_string(it->second) + ")");
    }
  }
}

// Reads the config file and stores its values, after checking every key and value: CAF would drop an
// unknown key or a value of the wrong type without a word.
void apply_config_file(option_table& config, const std::string& path) {
  const std::string text = read_config_file(path);
  refuse_durations(path, text);
  // Untyped (no option set given): every key and value as written, so that nothing is dropped before we
  // look at it.
  std::istringstream in(text);
  auto parsed = caf::actor_system_config::parse_config(in);
  if (!parsed) throw usage_error(describe_syntax_error(path, parsed.error()));
  std::vector<std::pair<const option_spec*, const caf::config_value*>> values;
  for (const auto& [key, value] : *parsed) {
    const option_spec* spec = config.find(key);
    if (spec == nullptr) {
      // Keys of [global] (or of no section) come back at the top; every other section as a dictionary.
      if (caf::holds_alternative<caf::settings>(value))
        throw usage_error(path + ": unknown section [" + key + "]; inflight " + config.command() + " reads [global] only");
      throw usage_error(path + ": unknown key '" + key + "' (inflight " + config.command() + " --help lists every key)");
    }
    const std::string where = path + ": " + key;
    if (config.caf_option(*spec).check(value))
      throw usage_error(where + ": expected " + expected_in_file(spec->kind) + ", got " + caf::to_string(value));
    check_value(*spec, value, where);
    values.emplace_back(spec, &value);
  }
  refuse_repeated_keys(config, path, text);
  for (const auto& [spec, value] : values) {
    spec->store(*value);
    config.mark_set(spec->name);
  }
}

// ---- help ----

// Appends `text` wrapped to `width` columns; lines after the first are indented by `indent` (the caller
// has written the first line's start, which ends at column `indent`).
void append_wrapped(std::string& out, const std::string& text, size_t indent, size_t width) {
  std::istringstream words(text);
  std::string word;
  size_t column = indent;
  bool line_empty = true;
  while (words >> word) {
    if (!line_empty && column + 1 + word.size() > width) {
      out += "\n" + std::string(indent, ' ');
      column = indent;
      line_empty = true;
    }
    if (!line_empty) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
    line_empty = false;
  }
  out += '\n';
}

// One option line of --help: the spelling padded to a column, then the wrapped description.
void append_option(std::string& out, const std::string& spelling, const std::string& description) {
  constexpr size_t column = 32, width = 106;
  out += "  " + spelling;
  if (spelling.size() + 2 + 1 > column) {
    out += "\n" + std::string(column, ' ');
  } else {
    out += std::string(column - 2 - spelling.size(), ' ');
  }
  const size_t start = out.size();
  append_wrapped(out, description, column, width);
  std::replace(out.begin() + std::ptrdiff_t(start), out.end(), '\x1f', ' ');
}

}  // namespace

bool load_options(option_table& table, int argc, char** argv) {
  const command_line cli = split_command_line(table, argc, argv);
  if (cli.config_file) apply_config_file(table, *cli.config_file);
  apply_command_line(table, cli);
  return cli.dump_config;
}

std::string options_help(const option_table& table, const char* intro) {
  std::string out = intro;
  out += "\n  --config-file PATH            read options from this INI file (--config PATH also works); none by default\n"
         "  --dump-config                 print the settings in effect as a config file, and exit\n"
         "  -h, --help                    print this text\n";
  std::string group;
  for (const option_spec& spec : table.specs()) {
    if (spec.group != group) {
      group = spec.group;
      out += "\n" + group + ":\n";
    }
    std::string spelling = "--" + spec.name + (spec.metavar.empty() ? "" : " " + spec.metavar);
    if (spec.kind == option_kind::flag) spelling = "--[no-]" + spec.name;
    std::string description = spec.help;
    // The default, read from the defaults themselves; nothing shown for "" and [] (the help says).
    const caf::config_value value = spec.load();
    const bool empty = (caf::holds_alternative<std::string>(value) && caf::get<std::string>(value).empty()) ||
                       (caf::holds_alternative<caf::config_value::list>(value) &&
                        caf::get<caf::config_value::list>(value).empty());
    // A non-breaking marker keeps "(default N)" on one line; append_option turns it back into a space.
    if (!empty) description += " (default\x1f" + caf::to_string(value) + ")";
    append_option(out, spelling, description);
  }
  return out;
}

std::string options_to_ini(const option_table& table) {
  std::string out = "[global]\n";
  for (const option_spec& spec : table.specs()) out += spec.name + "=" + caf::to_string(spec.load()) + "\n";
  return out;
}

}  // namespace inflight::cli
