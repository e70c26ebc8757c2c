"""End to end with the `websockets` Python client against `inflight serve`'s /v1/ws.

Usage: websocket_client_test.py PATH_TO_INFLIGHT

Two requests in flight on one socket (their deltas interleave), a cancel, and an invalid request; then
SIGTERM and exit code 0. Any failed check raises, so the process exits non-zero.
"""
import asyncio
import json
import sys

import websockets

from inflight_server import InflightServer


async def session(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        await ws.send(json.dumps({"id": "fr", "type": "completion", "prompt": "The capital of France is",
                                  "max_tokens": 8, "temperature": 0}))
        await ws.send(json.dumps({"id": 2, "type": "chat", "max_tokens": 6, "temperature": 0,
                                  "messages": [{"role": "user", "content": "Hello"}]}))
        await ws.send(json.dumps({"id": "long", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True}))
        await ws.send(json.dumps({"id": "bad", "prompt": "x", "temperature": -1}))
        texts, ends, cancelled = {}, {}, False
        while len(ends) < 4:
            message = json.loads(await ws.recv())
            key = str(message["id"])
            if message["type"] == "delta":
                texts[key] = texts.get(key, "") + message["text"]
                if key == "long" and len(texts[key]) > 20 and not cancelled:
                    await ws.send(json.dumps({"id": "long", "type": "cancel"}))
                    cancelled = True
            else:
                ends[key] = message
    assert "Paris" in texts["fr"], texts
    assert ends["fr"]["type"] == "done" and ends["fr"]["usage"]["completion_tokens"] == 8, ends["fr"]
    assert ends["2"]["type"] == "done" and texts.get("2"), (ends["2"], texts)
    assert ends["long"]["choices"][0]["finish_reason"] == "abort", ends["long"]
    assert ends["long"]["usage"]["completion_tokens"] < 4000, ends["long"]
    assert ends["bad"]["type"] == "error" and ends["bad"]["error"]["param"] == "temperature", ends["bad"]


def main():
    server = InflightServer(sys.argv[1])
    port = server.port
    try:
        asyncio.run(session(port))
        print("websocket client: all checks passed")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
