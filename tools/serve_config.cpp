// `inflight serve`'s options through CAF's configuration system (docs/caf-0.17.md §5). The only
// translation unit of the CLI that includes CAF.
//
// CAF declares the options (an actor_system_config subclass, category "global": the command line says
// --port, a config file says port=... under [global]), parses the config file, parses each command-line
// value by its option's type, and type-checks the values of the file. Where CAF 0.17 falls short of what
// a server's users need, this file steps in:
//  - CAF ignores unknown keys, unknown sections and values of the wrong type in a config file without a
//    word (docs/caf-0.17.md §9.6), and keeps the first of two values for one key. We read the file
//    untyped, check every key and value ourselves and refuse the file, naming the key.
//  - CAF's own command-line parser wants --name=value (our users type --name value), refuses
//    --flag=false, keeps only the last of several --api-key, and calls an empty string missing. So we
//    split the command line ourselves and give each value to its option's own CAF parser.
//  - Ranges (port 0..65535, positive sizes), allowed words (--batching) and units (KiB, seconds) are
//    ours: each option has an entry in serve_config's table that checks a parsed value and stores it
//    into serve_settings.
// Precedence: command line > config file > built-in defaults (the serve_settings initializers).
#include "serve_config.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/config_option.hpp>
#include <caf/config_option_adder.hpp>
#include <caf/config_option_set.hpp>
#include <caf/config_value.hpp>
#include <caf/pec.hpp>
#include <caf/settings.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

namespace inflight::cli {

namespace {

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
  std::function<void(const caf::config_value&)> store;  // the value into serve_settings
  std::function<caf::config_value()> load;               // the current value from serve_settings
};

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

// The options, declared to CAF and described for the rest of this file. The serve_settings given to the
// constructor is where values are stored and read; it must outlive the config.
class serve_config : public caf::actor_system_config {
 public:
  // Options appear in --help, --dump-config and config/inflight.ini in this order.
  explicit serve_config(serve_settings& s) {
    group("The model");
    text("model", "PATH", "GGUF model file; \"\" means the model tools/setup.sh fetches", s.model, true);
    text("model-name", "NAME", "the name clients put in \"model\"; \"\" means the model file's name without .gguf",
         s.server.model_name, true);
    choice("device", "DEVICE", "auto (cuda when this build has it and a GPU is present, else cpu), cpu or cuda",
           {"auto", "cpu", "cuda"}, [&s] { return s.device; }, [&s](const std::string& d) { s.device = d; });
    integer("threads", "CPU backend: threads for the model; 0 means one per hardware thread", 0, 1024, s.threads);
    integer("kv-cache-mb", "CPU backend: KV cache memory in MiB", 1, 1 << 20, s.kv_cache_mb);
    real("gpu-memory-fraction", "CUDA backend: share of GPU memory for weights, activations and the KV cache",
         0.0, 1.0, s.gpu_memory_fraction);
    flag("cuda-graphs", "CUDA backend: run decode steps as CUDA graphs", s.cuda_graphs);
    integer("block-size", "tokens per KV-cache block", 1, 1024, s.block_size);

    group("Scheduling");
    integer("max-num-seqs", "sequences running together at most (the batch size)", 1, 4096, s.engine.max_num_seqs);
    integer("max-num-batched-tokens",
            "tokens computed in one step at most; 0 means the backend's limit (512 on the CPU), which also caps it",
            0, 1 << 20, s.engine.max_num_batched_tokens);
    integer("max-waiting", "waiting requests at most; beyond, requests are refused with 429", 0, 1 << 20,
            s.engine.max_waiting);
    choice("batching", "MODE",
           "continuous, or static: the baseline where a batch runs until its longest request finishes",
           {"continuous", "static"}, [&s] { return std::string(s.engine.static_batching ? "static" : "continuous"); },
           [&s](const std::string& mode) { s.engine.static_batching = mode == "static"; });
    integer("static-batch-window-ms",
            "static batching only: a batch also starts when its oldest request has waited this long", 0, 60000,
            [&s] { return int64_t(s.engine.static_batch_window.count()); },
            [&s](int64_t ms) { s.engine.static_batch_window = std::chrono::milliseconds(ms); });
    flag("prefix-caching", "reuse the KV blocks of a prompt prefix computed before", s.engine.prefix_caching);
    flag("pipelining", "plan the next step while one runs (off: one step in flight, for comparison)",
         s.engine.pipelining);
    integer("actor-threads", "CAF worker threads for the request, scheduler and KV-manager actors", 1, 64,
            s.engine.actor_threads);

    group("HTTP");
    text("host", "ADDRESS", "listen address; 0.0.0.0 for every interface", s.server.host, false);
    integer("port", "listen port; 0 picks a free one", 0, 65535, s.server.port);
    list("api-key", "KEY",
         "require \"Authorization: Bearer KEY\" on every endpoint but /health, /ready and the page (whose "
         "WebSocket may pass ?api_key=KEY); repeat it or give a comma list for several keys",
         s.server.api_keys);
    integer("body-limit-kb", "largest request body (and WebSocket message) in KiB; beyond, 413", 1, 1 << 20,
            [&s] { return int64_t(s.server.body_limit >> 10); },
            [&s](int64_t kb) { s.server.body_limit = size_t(kb) << 10; });
    integer("header-limit-kb", "largest request header in KiB; beyond, 431", 1, 1024,
            [&s] { return int64_t(s.server.header_limit >> 10); },
            [&s](int64_t kb) { s.server.header_limit = size_t(kb) << 10; });
    integer("read-timeout-s", "a connection that sends nothing for this many seconds is closed", 1, 86400,
            [&s] { return int64_t(s.server.read_timeout.count()); },
            [&s](int64_t seconds) { s.server.read_timeout = std::chrono::seconds(seconds); });
    integer("shutdown-grace-s",
            "on SIGINT/SIGTERM, let running requests finish for up to this many seconds, then cancel the rest",
            0, 3600, [&s] { return int64_t(s.shutdown_grace.count()); },
            [&s](int64_t seconds) { s.shutdown_grace = std::chrono::seconds(seconds); });

    group("Request limits");
    integer("max-n", "choices (\"n\") in one request at most", 1, 1024, s.server.limits.max_n);
    integer("max-prompts", "prompts in one /v1/completions request at most", 1, 4096, s.server.limits.max_prompts);
    integer("max-stop", "stop strings in one request at most", 0, 1024, s.server.limits.max_stop);
    integer("default-max-tokens", "max_tokens of a request that gives none", 1, 1 << 20,
            s.server.limits.default_max_tokens);
  }

  const std::vector<option_spec>& specs() const { return specs_; }

  const option_spec* find(std::string_view name) const {
    for (const option_spec& spec : specs_) {
      if (spec.name == name) return &spec;
    }
    return nullptr;
  }

  // CAF's record of an option: its type, its parser and its type check.
  const caf::config_option& caf_option(const option_spec& spec) const {
    return *custom_options_.qualified_name_lookup("global", spec.name);
  }

 private:
  void group(std::string title) { group_ = std::move(title); }

  // Declares the option to CAF, without storage of CAF's (the table stores), and adds it to the table.
  template <class CafType>
  void declare(option_spec spec) {
    opt_group{custom_options_, "global"}.add<CafType>(spec.name, spec.help);
    spec.group = group_;
    specs_.push_back(std::move(spec));
  }

  void integer(const char* name, const char* help, int64_t min, int64_t max, std::function<int64_t()> get,
               std::function<void(int64_t)> set) {
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
  // An integer field of any width; the range check keeps the value inside it.
  template <class Int>
  void integer(const char* name, const char* help, int64_t min, int64_t max, Int& field) {
    integer(name, help, min, max, [&field] { return int64_t(field); }, [&field](int64_t n) { field = Int(n); });
  }

  // A number in (min, max].
  void real(const char* name, const char* help, double min, double max, double& field) {
    declare<double>({name, option_kind::real, "X", help, {},
                     [min, max](const caf::config_value& value) {
                       const double x = caf::get<double>(value);
                       if (x > min && x <= max) return std::string();
                       return std::to_string(x) + " is outside (" + std::to_string(min) + ", " + std::to_string(max) + "]";
                     },
                     [&field](const caf::config_value& value) { field = caf::get<double>(value); },
                     [&field] { return caf::config_value{field}; }});
  }

  void text(const char* name, const char* metavar, const char* help, std::string& field, bool may_be_empty) {
    declare<std::string>({name, option_kind::text, metavar, help, {},
                          [may_be_empty](const caf::config_value& value) {
                            return !may_be_empty && caf::get<std::string>(value).empty() ? std::string("is empty")
                                                                                          : std::string();
                          },
                          [&field](const caf::config_value& value) { field = caf::get<std::string>(value); },
                          [&field] { return caf::config_value{field}; }});
  }

  void choice(const char* name, const char* metavar, const char* help, std::vector<std::string> words,
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

  void flag(const char* name, const char* help, bool& field) {
    declare<bool>({name, option_kind::flag, "", help, {}, [](const caf::config_value&) { return std::string(); },
                   [&field](const caf::config_value& value) { field = caf::get<bool>(value); },
                   [&field] { return caf::config_value{field}; }});
  }

  void list(const char* name, const char* metavar, const char* help, std::vector<std::string>& field) {
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

  std::vector<option_spec> specs_;
  std::string group_;
};

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
command_line split_command_line(const serve_config& config, int argc, char** argv) {
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
caf::config_value parse_cli_value(const serve_config& config, const cli_argument& arg) {
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
void apply_command_line(const serve_config& config, const command_line& cli) {
  std::map<const option_spec*, caf::config_value::list> lists;
  for (const cli_argument& arg : cli.arguments) {
    caf::config_value value = parse_cli_value(config, arg);
    if (arg.spec->kind == option_kind::list) {
      auto& items = lists[arg.spec];
      for (caf::config_value& item : caf::get<caf::config_value::list>(value)) items.push_back(std::move(item));
    } else {
      arg.spec->store(value);
    }
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

// CAF keeps the first of two values for one key and drops the second without a word: an admin who
// appends `port=9000` to a file that sets port already would see no effect. So a key set twice is an
// error. CAF does not report where keys are, so this scans the lines: a key starts its line (after
// blanks) and is followed by '='. List items continued on later lines start with a quote or a digit and
// are never followed by '=', so they are not mistaken for keys.
void refuse_repeated_keys(const serve_config& config, const std::string& path, const std::string& text) {
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
void apply_config_file(const serve_config& config, const std::string& path) {
  const std::string text = read_config_file(path);
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
        throw usage_error(path + ": unknown section [" + key + "]; inflight serve reads [global] only");
      throw usage_error(path + ": unknown key '" + key + "' (inflight serve --help lists every key)");
    }
    const std::string where = path + ": " + key;
    if (config.caf_option(*spec).check(value))
      throw usage_error(where + ": expected " + expected_in_file(spec->kind) + ", got " + caf::to_string(value));
    check_value(*spec, value, where);
    values.emplace_back(spec, &value);
  }
  refuse_repeated_keys(config, path, text);
  for (const auto& [spec, value] : values) spec->store(*value);
}

// "SmolLM2-135M-Instruct.Q4_1" from ".../SmolLM2-135M-Instruct.Q4_1.gguf".
std::string model_name_of(std::string_view path) {
  if (const size_t slash = path.find_last_of('/'); slash != std::string_view::npos) path.remove_prefix(slash + 1);
  if (path.ends_with(".gguf")) path.remove_suffix(5);
  return std::string(path);
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

constexpr const char* help_intro = R"(usage: inflight serve [--config-file=PATH] [options]

Serves the model over HTTP with an OpenAI-compatible API until interrupted (Ctrl-C or SIGTERM):
POST /v1/completions, POST /v1/chat/completions (both with "stream": true for server-sent events),
GET /v1/models, GET /health, GET /ready, GET /metrics, POST /tokenize, POST /detokenize, the page at /.

Every option below can also be set in a config file: CAF's INI format, the option's name without the
dashes as the key, under [global]; strings in double quotes, flags true or false, lists ["a", "b"].
config/inflight.ini lists every key with its default. The command line overrides the file, the file
overrides the defaults. An unknown key or section, a value of the wrong type or out of range, or a key
set twice is an error (exit code 2), as is a bad option.

  --config-file PATH            read options from this INI file (--config PATH also works); none by default
  --dump-config                 print the settings in effect as a config file, and exit
  -h, --help                    print this text
)";

}  // namespace

serve_settings load_serve_settings(int argc, char** argv) {
  serve_settings settings;
  const serve_config config(settings);
  const command_line cli = split_command_line(config, argc, argv);
  if (cli.config_file) apply_config_file(config, *cli.config_file);
  apply_command_line(config, cli);
  settings.dump_config = cli.dump_config;
  // Empty means "the default" for both, in a file as on the command line.
  if (settings.model.empty()) settings.model = INFLIGHT_DEFAULT_MODEL;
  if (settings.server.model_name.empty()) settings.server.model_name = model_name_of(settings.model);
  return settings;
}

std::string serve_help_text() {
  serve_settings defaults;
  const serve_config config(defaults);
  std::string out = help_intro;
  std::string group;
  for (const option_spec& spec : config.specs()) {
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

std::string serve_settings_to_ini(const serve_settings& settings) {
  // The config reads and writes through the settings it is given; a copy keeps `settings` const.
  serve_settings copy = settings;
  const serve_config config(copy);
  std::string out = "[global]\n";
  for (const option_spec& spec : config.specs()) out += spec.name + "=" + caf::to_string(spec.load()) + "\n";
  return out;
}

}  // namespace inflight::cli
