"""The request log of `inflight serve`: one line per request on stderr, as JSON (--log-requests json) or
logfmt (the default), parsed here as log tools would, with the request's id, endpoint, status, stream,
choices, tokens, time to first token, total time, finish reasons and, for a failure, the error; no line
with --log-requests off. No prompt or output text is ever in it.

Usage: request_log_test.py PATH_TO_INFLIGHT
"""
import asyncio
import json
import re
import shlex
import sys

import openai
import websockets

from inflight_server import InflightServer

SECRET_PROMPT = "my-secret-prompt-words"


def request_lines(server):
    return [line for line in server.lines if "request" in line and ("event=request" in line or '"event":"request"' in line)]


async def websocket_requests(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        await ws.send(json.dumps({"id": "w1", "prompt": SECRET_PROMPT, "max_tokens": 3, "temperature": 0}))
        await ws.send(json.dumps({"id": 7, "prompt": "x", "n": 0}))
        ends = 0
        while ends < 2:
            message = json.loads(await ws.recv())
            ends += message["type"] in ("done", "error")


def exercise(port):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    client.completions.create(model=client.models.list().data[0].id, prompt=SECRET_PROMPT, max_tokens=4, temperature=0)
    stream = client.chat.completions.create(model=client.models.list().data[0].id, n=2, max_tokens=3, stream=True,
                                            messages=[{"role": "user", "content": SECRET_PROMPT}])
    for _ in stream:
        pass
    try:
        client.completions.create(model=client.models.list().data[0].id, prompt="x", max_tokens=0)
        raise AssertionError("max_tokens 0 was accepted")
    except openai.BadRequestError:
        pass
    asyncio.run(websocket_requests(port))


def main():
    inflight = sys.argv[1]
    server = InflightServer(inflight, "--threads", "1", "--log-requests", "json")
    try:
        exercise(server.port)
    finally:
        server.stop()
    entries = [json.loads(line) for line in request_lines(server)]
    assert len(entries) == 5, entries
    for entry in entries:
        assert entry["level"] == "info" and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["time"]), entry
        assert entry["total_ms"] >= 0, entry
    completion, chat, refused = entries[:3]
    by_id = {entry["id"]: entry for entry in entries[3:]}  # the refusal is logged before the other one ends
    ws, ws_refused = by_id['ws:"w1"'], by_id["ws:7"]
    assert completion["id"].startswith("cmpl-") and completion["endpoint"] == "/v1/completions", completion
    assert completion["status"] == 200 and completion["stream"] is False and completion["choices"] == 1, completion
    assert completion["completion_tokens"] == 4 and completion["prompt_tokens"] > 0, completion
    assert completion["finish"] in ("length", "stop") and 0 < completion["ttft_ms"] <= completion["total_ms"], completion
    assert chat["id"].startswith("chatcmpl-") and chat["stream"] is True and chat["choices"] == 2, chat
    assert len(chat["finish"].split(",")) == 2 and chat["completion_tokens"] <= 6, chat
    assert refused["status"] == 400 and "max_tokens" in refused["error"] and refused["ttft_ms"] is None, refused
    assert ws["id"] == 'ws:"w1"' and ws["endpoint"] == "/v1/ws" and ws["status"] == 200, ws
    assert ws["completion_tokens"] == 3 and ws["finish"] == "length", ws
    assert ws_refused["id"] == "ws:7" and ws_refused["status"] == 400 and "'n'" in ws_refused["error"], ws_refused
    assert not any(SECRET_PROMPT in line for line in server.lines), "a prompt reached the log"

    # The default: logfmt, parsed with shell-like quoting.
    server = InflightServer(inflight, "--threads", "1")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)
        client.completions.create(model=client.models.list().data[0].id, prompt="Hello", max_tokens=2)
        try:
            client.completions.create(model="no-such-model", prompt="Hello")
        except openai.NotFoundError:
            pass
    finally:
        server.stop()
    lines = request_lines(server)
    assert len(lines) == 2, lines
    fields = [dict(pair.split("=", 1) for pair in shlex.split(line)) for line in lines]
    assert fields[0]["event"] == "request" and fields[0]["status"] == "200" and fields[0]["completion_tokens"] == "2", fields
    assert float(fields[0]["ttft_ms"]) >= 0 and fields[0]["finish"] in ("length", "stop"), fields
    assert fields[1]["status"] == "404" and fields[1]["error"] == "the model 'no-such-model' does not exist", fields

    server = InflightServer(inflight, "--threads", "1", "--log-requests", "off")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)
        client.completions.create(model=client.models.list().data[0].id, prompt="Hello", max_tokens=2)
    finally:
        server.stop()
    assert not request_lines(server), server.lines
    print("request log: json, logfmt and off all as documented")


if __name__ == "__main__":
    main()
