// The request fields that ask for structured output (net/structured_output_request.hpp): every spelling,
// the JSON Schema keyword check (what is enforced is taken, anything else is a 400 naming the keyword and
// where it is), and at most one constraint per request.
#include <doctest/doctest.h>

#include <string>
#include <variant>

#include "openai_request.hpp"
#include "structured_output_request.hpp"

using namespace inflight;
using namespace inflight::net;

namespace {

output_constraint constraint_of(endpoint kind, const std::string& body) {
  const parse_result result = parse_request(kind, body);
  if (const auto* error = std::get_if<api_error>(&result)) FAIL("unexpected error: " << error->message);
  return std::get<completion_request>(result).params.constraint;
}

api_error error_of(endpoint kind, const std::string& body) {
  const parse_result result = parse_request(kind, body);
  REQUIRE(std::holds_alternative<api_error>(result));
  return std::get<api_error>(result);
}

const std::string chat = R"("messages": [{"role": "user", "content": "hi"}])";

}  // namespace

TEST_CASE("response_format: text, json_object and json_schema, on chat and on completions") {
  CHECK_FALSE(constraint_of(endpoint::chat_completions, "{" + chat + R"(, "response_format": {"type": "text"}})").active());
  const output_constraint object =
      constraint_of(endpoint::chat_completions, "{" + chat + R"(, "response_format": {"type": "json_object"}})");
  CHECK(object.type == output_constraint::kind::json_object);
  const std::string schema = R"({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})";
  const output_constraint with_schema = constraint_of(
      endpoint::chat_completions,
      "{" + chat + R"(, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": )" +
          schema + "}}}");
  CHECK(with_schema.type == output_constraint::kind::json_schema);
  CHECK(with_schema.text == schema);  // the schema's JSON text as the client wrote it
  // /v1/completions takes it too (as vLLM does), and null means not given.
  CHECK(constraint_of(endpoint::completions, R"({"prompt": "x", "response_format": {"type": "json_object"}})").type ==
        output_constraint::kind::json_object);
  CHECK_FALSE(constraint_of(endpoint::completions, R"({"prompt": "x", "response_format": null})").active());

  CHECK(error_of(endpoint::chat_completions, "{" + chat + R"(, "response_format": {"type": "xml"}})").param == "response_format");
  CHECK(error_of(endpoint::chat_completions, "{" + chat + R"(, "response_format": {"type": "json_schema"}})").message.find("schema") !=
        std::string::npos);
  CHECK(error_of(endpoint::chat_completions, "{" + chat + R"(, "response_format": "json"})").param == "response_format");
}

TEST_CASE("vLLM's guided_* and llama.cpp's json_schema and grammar") {
  const std::string schema = R"({"type": "string", "enum": ["a", "b"]})";
  CHECK(constraint_of(endpoint::completions, R"({"prompt": "x", "guided_json": )" + schema + "}").text == schema);
  // A schema given as a JSON string (vLLM accepts both).
  const output_constraint from_string = constraint_of(endpoint::completions, R"({"prompt": "x", "guided_json": "{\"type\": \"integer\"}"})");
  CHECK(from_string.type == output_constraint::kind::json_schema);
  CHECK(from_string.text == R"({"type": "integer"})");
  CHECK(constraint_of(endpoint::completions, R"({"prompt": "x", "json_schema": )" + schema + "}").type ==
        output_constraint::kind::json_schema);
  const output_constraint regex = constraint_of(endpoint::completions, R"({"prompt": "x", "guided_regex": "[0-9]+"})");
  CHECK(regex.type == output_constraint::kind::regex);
  CHECK(regex.text == "[0-9]+");
  for (const char* key : {"grammar", "guided_grammar"}) {
    const output_constraint g = constraint_of(endpoint::completions, std::string(R"({"prompt": "x", ")") + key + R"(": "root ::= \"a\""})");
    CHECK(g.type == output_constraint::kind::grammar);
    CHECK(g.text == "root ::= \"a\"");
  }
  // guided_choice becomes a grammar of its strings, quoted and escaped.
  const output_constraint choice =
      constraint_of(endpoint::completions, R"({"prompt": "x", "guided_choice": ["yes", "no \"way\"", "a\\b"]})");
  CHECK(choice.type == output_constraint::kind::grammar);
  CHECK(choice.text == R"(root ::= "yes" | "no \"way\"" | "a\\b")");

  CHECK(error_of(endpoint::completions, R"({"prompt": "x", "guided_regex": ""})").param == "guided_regex");
  CHECK(error_of(endpoint::completions, R"({"prompt": "x", "guided_regex": 5})").param == "guided_regex");
  CHECK(error_of(endpoint::completions, R"({"prompt": "x", "guided_choice": []})").param == "guided_choice");
  CHECK(error_of(endpoint::completions, R"({"prompt": "x", "guided_choice": ["a", 1]})").param == "guided_choice");
  CHECK(error_of(endpoint::completions, R"({"prompt": "x", "guided_json": [1]})").param == "guided_json");
  CHECK(error_of(endpoint::completions, R"({"prompt": "x", "guided_json": "{not json"})").message.find("not valid JSON") !=
        std::string::npos);
}

TEST_CASE("two constraints in one request are refused, naming the second") {
  const api_error error = error_of(endpoint::chat_completions, "{" + chat +
                                                                   R"(, "response_format": {"type": "json_object"}, "guided_regex": "a"})");
  CHECK(error.param == "guided_regex");
  CHECK(error.message.find("second output constraint") != std::string::npos);
  // response_format text is no constraint, so a grammar beside it is fine.
  CHECK(constraint_of(endpoint::chat_completions, "{" + chat + R"(, "response_format": {"type": "text"}, "grammar": "root ::= \"a\""})").type ==
        output_constraint::kind::grammar);
}

TEST_CASE("JSON Schema keywords: the enforced and the annotations pass, the rest is named with its place") {
  // Everything supported, nested in every place subschemas sit.
  CHECK_FALSE(check_json_schema(R"({
    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "t", "description": "d",
    "type": "object", "required": ["a"], "additionalProperties": false, "minProperties": 1, "maxProperties": 4,
    "properties": {
      "a": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$", "default": "x"},
      "b": {"type": "array", "items": {"$ref": "#/$defs/n"}, "minItems": 1, "maxItems": 3},
      "c": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
      "d": {"oneOf": [{"const": 1}, {"enum": [2, 3]}]},
      "e": {"allOf": [{"type": "integer"}, {"minimum": 0, "maximum": 9, "multipleOf": 3}]},
      "f": {"type": "array", "prefixItems": [{"type": "boolean"}], "items": false},
      "g": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "examples": [0.5]}
    },
    "patternProperties": {"^x": {"type": "string"}},
    "$defs": {"n": {"type": "integer", "$comment": "c"}}
  })", "s"));
  CHECK_FALSE(check_json_schema("true", "s"));

  const auto problem = [](const std::string& schema) {
    const auto error = check_json_schema(schema, "response_format.json_schema.schema");
    REQUIRE(error.has_value());
    CHECK(error->param == "response_format.json_schema.schema");
    return error->message;
  };
  CHECK(problem(R"({"not": {"type": "null"}})").find("'not' (at #)") != std::string::npos);
  CHECK(problem(R"({"properties": {"a": {"type": "array", "uniqueItems": true}}})").find("'uniqueItems' (at #.properties.a)") !=
        std::string::npos);
  CHECK(problem(R"({"$defs": {"x": {"if": {}, "then": {}}}})").find("'if' (at #.$defs.x)") != std::string::npos);
  CHECK(problem(R"({"anyOf": [{}, {"dependentRequired": {}}]})").find("'dependentRequired' (at #.anyOf[1])") != std::string::npos);
  CHECK(problem(R"({"items": {"contains": {}}})").find("'contains' (at #.items)") != std::string::npos);
  CHECK(problem(R"({"nullable": true})").find("'nullable'") != std::string::npos);  // OpenAPI's, not JSON Schema's
  CHECK(problem(R"({"type": "string", "format": "credit-card"})").find("format 'credit-card'") != std::string::npos);
  CHECK(problem(R"({"properties": []})").find("must be an object") != std::string::npos);
  CHECK(problem(R"({"anyOf": {}})").find("must be an array") != std::string::npos);
  CHECK(problem("[1, 2]").find("must be a schema") != std::string::npos);
  CHECK(problem("{oops").find("not valid JSON") != std::string::npos);
  // Depth is bounded: 64 levels pass, 65 do not.
  const auto nested = [](int levels) {
    std::string schema;
    for (int i = 0; i < levels; ++i) schema += R"({"items": )";
    schema += "{}";
    for (int i = 0; i < levels; ++i) schema += "}";
    return schema;
  };
  CHECK_FALSE(check_json_schema(nested(63), "s"));
  CHECK(problem(nested(65)).find("nested more than 64 levels") != std::string::npos);
}
