#include "structured_output_request.hpp"

#include <array>
#include <functional>

#include "request_json.hpp"

namespace inflight::net {

namespace {

using simdjson::ondemand::json_type;
using simdjson::ondemand::value;

// Keywords the grammar engine (xgrammar) enforces. Those it reads but does not enforce (it warns and goes
// on: not, if/then/else, dependentRequired, dependentSchemas, uniqueItems, contains, minContains,
// maxContains) are absent on purpose, as is every keyword it does not know.
constexpr std::array enforced_keywords = {
    "type", "enum", "const", "$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf",
    "properties", "required", "additionalProperties", "patternProperties", "propertyNames", "minProperties",
    "maxProperties", "unevaluatedProperties", "items", "prefixItems", "minItems", "maxItems", "unevaluatedItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
    "pattern", "format"};
// Keywords that change nothing about what validates.
constexpr std::array annotation_keywords = {"title", "description", "default", "examples", "$schema", "$id",
                                            "$comment", "readOnly", "writeOnly", "deprecated"};
// The string formats it turns into a regular expression; another format would be ignored.
constexpr std::array enforced_formats = {"email", "date", "time", "date-time", "duration", "ipv4", "ipv6",
                                         "hostname", "uuid", "uri", "uri-reference", "uri-template",
                                         "json-pointer", "relative-json-pointer"};

template <size_t n>
bool contains(const std::array<const char*, n>& names, std::string_view name) {
  for (const char* candidate : names)
    if (name == candidate) return true;
  return false;
}

constexpr int max_schema_depth = 64;

// The first thing in `schema` (a subschema at `path`) the engine would not enforce, as a message.
std::optional<std::string> unsupported(simdjson::dom::element schema, const std::string& path, int depth) {
  if (depth > max_schema_depth) return "the schema is nested more than " + std::to_string(max_schema_depth) + " levels deep";
  if (schema.is_bool()) return std::nullopt;  // true / false: anything, nothing
  simdjson::dom::object object;
  if (schema.get_object().get(object)) return path + " must be a schema (an object or a boolean)";
  for (const auto field : object) {
    const std::string_view key = field.key;
    const std::string at = path + "." + std::string(key);
    if (contains(annotation_keywords, key)) continue;
    if (!contains(enforced_keywords, key))
      return "the keyword '" + std::string(key) + "' (at " + path + ") is not supported: structured output "
             "enforces type, enum, const, $ref/$defs, anyOf/oneOf/allOf, properties, required, "
             "additionalProperties, items, prefixItems, min/maxItems, min/maxLength, pattern, format, "
             "minimum/maximum, multipleOf and the object keywords (see README)";
    if (key == "format") {
      std::string_view format;
      if (field.value.get_string().get(format)) return at + " must be a string";
      if (!contains(enforced_formats, format))
        return "the format '" + std::string(format) + "' (at " + path + ") is not supported";
    }
    // Where subschemas sit: maps of them, lists of them, or one.
    if (key == "properties" || key == "patternProperties" || key == "$defs" || key == "definitions") {
      simdjson::dom::object members;
      if (field.value.get_object().get(members)) return at + " must be an object";
      for (const auto member : members)
        if (auto problem = unsupported(member.value, at + "." + std::string(member.key), depth + 1)) return problem;
    } else if (key == "prefixItems" || key == "anyOf" || key == "oneOf" || key == "allOf") {
      simdjson::dom::array items;
      if (field.value.get_array().get(items)) return at + " must be an array";
      size_t index = 0;
      for (const auto item : items)
        if (auto problem = unsupported(item, at + "[" + std::to_string(index++) + "]", depth + 1)) return problem;
    } else if (key == "items" || key == "additionalProperties" || key == "propertyNames" ||
               key == "unevaluatedProperties" || key == "unevaluatedItems") {
      if (auto problem = unsupported(field.value, at, depth + 1)) return problem;
    }
  }
  return std::nullopt;
}

// A schema given as an object (its JSON text is taken as written) or, as vLLM also takes it, as a JSON
// string holding the schema.
std::optional<api_error> read_schema(value& v, const std::string& param, std::string& out) {
  json_type type;
  if (v.type().get(type)) return bad(param, "'" + param + "' is not valid JSON");
  if (type == json_type::string) {
    std::string_view text;
    if (v.get_string().get(text)) return bad(param, "'" + param + "' is not valid JSON");
    out.assign(text);
  } else if (type == json_type::object) {
    simdjson::ondemand::object object;
    std::string_view text;
    if (v.get_object().get(object) || object.raw_json().get(text)) return bad(param, "'" + param + "' is not valid JSON");
    out.assign(text);
  } else {
    return bad(param, "'" + param + "' must be a JSON Schema object");
  }
  return check_json_schema(out, param);
}

std::optional<api_error> read_text(value& v, const std::string& param, std::string& out) {
  std::string_view text;
  if (v.get_string().get(text)) return bad(param, "'" + param + "' must be a string");
  if (text.empty()) return bad(param, "'" + param + "' must not be empty");
  out.assign(text);
  return std::nullopt;
}

// response_format: {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}
std::optional<api_error> read_response_format(value& v, output_constraint& out) {
  const std::string param = "response_format";
  simdjson::ondemand::object object;
  if (v.get_object().get(object)) return bad(param, "'response_format' must be an object");
  std::string type;
  bool has_json_schema = false;
  for (auto field : object) {
    std::string_view key;
    value item;
    if (field.unescaped_key().get(key) || field.value().get(item)) return bad(param, "'response_format' is not valid JSON");
    if (key == "type") {
      std::string_view text;
      if (item.get_string().get(text)) return bad(param, "'response_format.type' must be a string");
      type.assign(text);
    } else if (key == "json_schema") {
      simdjson::ondemand::object spec;
      if (item.get_object().get(spec)) return bad(param, "'response_format.json_schema' must be an object");
      for (auto member : spec) {
        std::string_view name;
        value schema;
        if (member.unescaped_key().get(name) || member.value().get(schema))
          return bad(param, "'response_format.json_schema' is not valid JSON");
        if (name == "schema") {
          has_json_schema = true;
          if (auto error = read_schema(schema, "response_format.json_schema.schema", out.text)) return error;
        }
        // name, description, strict: the schema is always enforced strictly.
      }
    }
  }
  if (type == "text") return std::nullopt;
  if (type == "json_object") {
    out = {output_constraint::kind::json_object, ""};
    return std::nullopt;
  }
  if (type == "json_schema") {
    if (!has_json_schema) return bad(param, "'response_format.json_schema.schema' is required for type json_schema");
    out.type = output_constraint::kind::json_schema;
    return std::nullopt;
  }
  return bad(param, "'response_format.type' must be 'text', 'json_object' or 'json_schema'");
}

// GBNF string literal for `text`: quotes, backslashes and control characters escaped.
std::string gbnf_literal(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// guided_choice: ["yes", "no", ...] -> the grammar root ::= "yes" | "no" | ...
std::optional<api_error> read_choice(value& v, output_constraint& out) {
  simdjson::ondemand::array array;
  if (v.get_array().get(array)) return bad("guided_choice", "'guided_choice' must be an array of strings");
  std::string grammar = "root ::= ";
  size_t count = 0;
  for (auto element : array) {
    std::string_view choice;
    if (element.get_string().get(choice)) return bad("guided_choice", "'guided_choice' must be an array of strings");
    if (choice.empty()) return bad("guided_choice", "'guided_choice' must not hold an empty string");
    grammar += (count++ ? " | " : "") + gbnf_literal(choice);
  }
  if (count == 0) return bad("guided_choice", "'guided_choice' must not be empty");
  out = {output_constraint::kind::grammar, grammar};
  return std::nullopt;
}

}  // namespace

bool is_structured_output_field(std::string_view key) {
  return key == "response_format" || key == "guided_json" || key == "guided_regex" || key == "guided_grammar" ||
         key == "guided_choice" || key == "json_schema" || key == "grammar";
}

std::optional<api_error> read_structured_output_field(std::string_view key, value& v, output_constraint& out) {
  const std::string param(key);
  json_type type;
  if (v.type().get(type)) return bad(param, "'" + param + "' is not valid JSON");
  if (type == json_type::null) return std::nullopt;
  output_constraint read;
  std::optional<api_error> error;
  if (key == "response_format") {
    error = read_response_format(v, read);
  } else if (key == "guided_json" || key == "json_schema") {
    read.type = output_constraint::kind::json_schema;
    error = read_schema(v, param, read.text);
  } else if (key == "guided_regex") {
    read.type = output_constraint::kind::regex;
    error = read_text(v, param, read.text);
  } else if (key == "guided_grammar" || key == "grammar") {
    read.type = output_constraint::kind::grammar;
    error = read_text(v, param, read.text);
  } else if (key == "guided_choice") {
    error = read_choice(v, read);
  }
  if (error) return error;
  if (!read.active()) return std::nullopt;  // response_format {"type": "text"}
  if (out.active())
    return bad(param, "'" + param + "' asks for a second output constraint; give one of response_format, guided_json, "
                      "guided_regex, guided_grammar, guided_choice, json_schema, grammar");
  out = std::move(read);
  return std::nullopt;
}

std::optional<api_error> check_json_schema(std::string_view schema, const std::string& param) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (const auto error = parser.parse(schema.data(), schema.size()).get(root))
    return bad(param, "'" + param + "' is not valid JSON: " + simdjson::error_message(error));
  if (auto problem = unsupported(root, "#", 0)) return bad(param, *problem);
  return std::nullopt;
}

}  // namespace inflight::net
