"""Structured output end to end: the official `openai` client against `inflight serve`, every answer
validated by an independent JSON Schema validator (the `jsonschema` package).

Usage: structured_output_test.py PATH_TO_INFLIGHT

Schemas of every supported kind (types, properties and required, enums and const, integer ranges, arrays
with items and min/max items, nested objects, $ref to $defs, anyOf, string patterns and formats), greedy and
sampled, whole and streamed, n > 1; json_object; vLLM's guided_* and llama.cpp's grammar on /v1/completions;
a schema that cannot be finished within max_tokens ends with finish_reason "length"; an unsupported keyword
is a 400 that names it. Exits non-zero on the first failed check.
"""
import json
import re
import sys

import jsonschema
import openai

from inflight_server import InflightServer

QUESTION = [{"role": "user", "content": "Describe a fictional person as JSON."}]

SCHEMAS = {
    "flat object, enums, ranges, boolean": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": ["Ada", "Grace", "Linus", "Margaret"]},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "admin": {"type": "boolean"},
        },
        "required": ["name", "age", "admin"],
        "additionalProperties": False,
    },
    "array of $ref items with min/max items": {
        "type": "object",
        "properties": {"languages": {"type": "array", "items": {"$ref": "#/$defs/language"}, "minItems": 1,
                                     "maxItems": 3}},
        "required": ["languages"],
        "$defs": {"language": {"type": "string", "enum": ["C", "C++", "Python", "Rust"]}},
    },
    "nested objects and const": {
        "type": "object",
        "properties": {
            "kind": {"const": "person"},
            "address": {"type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 20},
                                       "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                        "required": ["city", "zip"]},
        },
        "required": ["kind", "address"],
    },
    "anyOf, null and a date format": {
        "type": "object",
        "properties": {
            "born": {"type": "string", "format": "date"},
            "nickname": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 12}]},
        },
        "required": ["born", "nickname"],
    },
    "a top-level array": {
        "type": "array",
        "items": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
                  "required": ["x"]},
        "minItems": 2,
        "maxItems": 2,
    },
}


def response_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def validated(text, schema, what):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{what}: not JSON ({error}): {text!r}")
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as error:
        raise AssertionError(f"{what}: does not validate ({error.message}): {text!r}")
    return value


def main():
    server = InflightServer(sys.argv[1], "--model-name", "smollm2", "--threads", "1")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)
        checked = 0
        for what, schema in SCHEMAS.items():
            # Greedy, then sampled with two seeds: the constraint holds whatever the model would say.
            for temperature, seed in ((0, None), (0.9, 1), (0.9, 2)):
                answer = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=96,
                                                        temperature=temperature, seed=seed,
                                                        response_format=response_format(schema))
                choice = answer.choices[0]
                assert choice.finish_reason == "stop", (what, choice)
                validated(choice.message.content, schema, f"{what} (temperature {temperature})")
                checked += 1

        # Streamed: the concatenated deltas validate; n > 1: every choice does.
        schema = SCHEMAS["flat object, enums, ranges, boolean"]
        pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=96, temperature=0, stream=True,
            response_format=response_format(schema)) if chunk.choices]
        validated("".join(pieces), schema, "streamed")
        several = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=96, temperature=1.0,
                                                 n=3, response_format=response_format(schema))
        assert len(several.choices) == 3
        for choice in several.choices:
            validated(choice.message.content, schema, f"n=3, choice {choice.index}")

        # json_object: any object.
        obj = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=96, temperature=0,
                                             response_format={"type": "json_object"})
        assert isinstance(json.loads(obj.choices[0].message.content), dict), obj

        # /v1/completions with vLLM's and llama.cpp's fields.
        regex = client.completions.create(model="smollm2", prompt="The first moon landing was on", max_tokens=16,
                                          temperature=0, extra_body={"guided_regex": "[0-9]{4}-[0-9]{2}-[0-9]{2}"})
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", regex.choices[0].text), regex
        choice = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8,
                                           temperature=0, extra_body={"guided_choice": ["Paris", "Lyon", "Nice"]})
        assert choice.choices[0].text in ("Paris", "Lyon", "Nice"), choice
        grammar = client.completions.create(model="smollm2", prompt="Is water wet? Answer:", max_tokens=8,
                                            temperature=0, extra_body={"grammar": 'root ::= ("yes" | "no") "."'})
        assert grammar.choices[0].text in ("yes.", "no."), grammar
        guided = client.completions.create(model="smollm2", prompt="A person:", max_tokens=96, temperature=0,
                                           extra_body={"guided_json": schema})
        validated(guided.choices[0].text, schema, "guided_json on /v1/completions")

        # Cannot be finished within max_tokens: cut short, and said so.
        long_schema = {"type": "object", "properties": {"essay": {"type": "string", "minLength": 400}},
                       "required": ["essay"]}
        cut = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=12, temperature=0,
                                             response_format=response_format(long_schema))
        assert cut.choices[0].finish_reason == "length", cut
        try:
            json.loads(cut.choices[0].message.content)
            raise AssertionError("an unfinished answer parsed as JSON")
        except json.JSONDecodeError:
            pass

        # What cannot be enforced is refused, naming the keyword; so is a grammar that does not parse.
        for bad, needle in (({"type": "object", "not": {"required": ["x"]}}, "'not'"),
                            ({"type": "array", "uniqueItems": True}, "'uniqueItems'")):
            try:
                client.chat.completions.create(model="smollm2", messages=QUESTION, response_format=response_format(bad))
                raise AssertionError(f"{bad} was accepted")
            except openai.BadRequestError as error:
                assert needle in str(error) and error.status_code == 400, error
        try:
            client.completions.create(model="smollm2", prompt="x", extra_body={"grammar": "root ::= ("})
            raise AssertionError("a broken grammar was accepted")
        except openai.BadRequestError as error:
            assert "invalid grammar" in str(error), error
        print(f"structured output: {checked} schema answers and every other check passed")
    finally:
        server.stop()  # asserts a clean exit


if __name__ == "__main__":
    main()
