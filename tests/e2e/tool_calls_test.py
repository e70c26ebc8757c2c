"""Tool calls end to end: the official `openai` client's tool-calling flow against `inflight serve`.

Usage: tool_calls_test.py PATH_TO_INFLIGHT

tool_choice "required" and a named function (whole and streamed, the client putting the streamed
delta.tool_calls back together): every call names a listed function and its arguments validate against the
function's parameters (checked by the `jsonschema` package, not by inflight); parallel_tool_calls false
gives exactly one call; the answer goes back as an assistant message with tool_calls plus a `tool` message
with the result, and the model answers with that result in its prompt; "auto" answers either with text or
with well-formed calls, and finish_reason says which; what cannot be honoured is a 400 naming the field.
Exits non-zero on the first failed check.
"""
import json
import sys

import jsonschema
import openai

from inflight_server import InflightServer

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}}, "required": ["timezone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The current time in a timezone",
                                      "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def checked_calls(calls, what):
    assert calls, f"{what}: no tool calls"
    for call in calls:
        assert call.type == "function" and call.id, (what, call)
        assert call.function.name in SCHEMAS, (what, call)
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return calls


def streamed_calls(client, **request):
    """The client's stream put back together as OpenAI's docs do: delta.tool_calls by index."""
    calls, finish, content = {}, None, ""
    for chunk in client.chat.completions.create(stream=True, **request):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish, content


def main():
    server = InflightServer(sys.argv[1], "--model-name", "smollm2", "--threads", "1")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)
        common = dict(model="smollm2", messages=QUESTION, tools=TOOLS, max_tokens=100)

        # required, one call (parallel_tool_calls false): greedy and sampled.
        for temperature, seed in ((0, None), (0.9, 1), (0.9, 2)):
            answer = client.chat.completions.create(tool_choice="required", parallel_tool_calls=False,
                                                    temperature=temperature, seed=seed, **common)
            choice = answer.choices[0]
            assert choice.finish_reason == "tool_calls", choice
            assert len(checked_calls(choice.message.tool_calls, f"required, temperature {temperature}")) == 1

        # required with parallel calls: the model decides how many. A small model may go on repeating calls
        # until max_tokens; then the answer is the unfinished JSON as text, with finish_reason "length".
        finished = 0
        for seed in range(3):
            answer = client.chat.completions.create(tool_choice="required", temperature=0.9, seed=seed,
                                                    **{**common, "max_tokens": 200})
            choice = answer.choices[0]
            if choice.finish_reason == "tool_calls":
                checked_calls(choice.message.tool_calls, f"parallel, seed {seed}")
                finished += 1
            else:
                assert choice.finish_reason == "length" and choice.message.content.startswith('[{"name": "'), choice
                assert not choice.message.tool_calls
        print(f"required with parallel calls: {finished} of 3 sampled answers finished within 200 tokens")

        # A named function.
        named_choice = {"type": "function", "function": {"name": "get_time"}}
        named = client.chat.completions.create(tool_choice=named_choice, temperature=0, **common)
        calls = checked_calls(named.choices[0].message.tool_calls, "named")
        assert [call.function.name for call in calls] == ["get_time"], calls
        assert named.choices[0].finish_reason == "tool_calls"

        # Streamed, put back together by index.
        for tool_choice in ("required", named_choice):
            calls, finish, content = streamed_calls(client, tool_choice=tool_choice, temperature=0, **common)
            assert finish == "tool_calls" and content == "", (tool_choice, finish, content)
            for call in calls:
                assert call["id"] and call["name"] in SCHEMAS, call
                jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])

        # The round trip: the call, then its result as a `tool` message; the model answers with it in its prompt.
        first = client.chat.completions.create(tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                               temperature=0, **common)
        call = first.choices[0].message.tool_calls[0]
        result = "18 degrees celsius and sunny"
        conversation = QUESTION + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
        second = client.chat.completions.create(model="smollm2", messages=conversation, tools=TOOLS, tool_choice="none",
                                                max_tokens=40, temperature=0)
        assert second.choices[0].message.content and second.choices[0].finish_reason in ("stop", "length"), second
        assert not second.choices[0].message.tool_calls
        # The call and the result are in the prompt: it grew by at least their tokens.
        alone = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=1, temperature=0)
        assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 20, (second.usage, alone.usage)

        # auto: the model decides; whatever it did, the response says it consistently.
        auto_text = 0
        for seed in range(4):
            answer = client.chat.completions.create(tool_choice="auto", temperature=0.8, seed=seed, **common)
            choice = answer.choices[0]
            if choice.message.tool_calls:
                assert choice.finish_reason == "tool_calls", choice
                checked_calls(choice.message.tool_calls, f"auto, seed {seed}")
            else:
                # Text (a <tool_call> block that is not a well-formed call stays text).
                assert choice.finish_reason in ("stop", "length") and choice.message.content, choice
                auto_text += 1

        print(f"auto: {4 - auto_text} of 4 sampled answers were calls")

        # Refused, naming the field.
        for request, field in (
                (dict(tool_choice={"type": "function", "function": {"name": "book_flight"}}), "tool_choice"),
                (dict(tool_choice="required", response_format={"type": "json_object"}), "tool_choice"),
                (dict(extra_body={"functions": [{"name": "f"}]}), "functions")):
            try:
                client.chat.completions.create(**common, **request)
                raise AssertionError(f"{request} was accepted")
            except openai.BadRequestError as error:
                assert error.status_code == 400 and error.body["param"] == field, error
        print("tool calls: required, named, streamed, round trip, auto and refusals all passed")
    finally:
        server.stop()  # asserts a clean exit


if __name__ == "__main__":
    main()
