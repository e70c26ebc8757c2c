#!/usr/bin/env python3
"""Soak test for `inflight serve`: a mixed load for a fixed time, then checks that nothing leaked.

    python3 tools/soak.py [--duration 60] [--clients 16] [--seed 1] [--json out.json]
                          [--inflight build/bin/inflight] [-- SERVE_ARGS...]
    python3 tools/soak.py --url http://127.0.0.1:8000 --pid PID ...      (attach to a running server)

By default it starts `inflight serve --port 0 SERVE_ARGS` itself and always reaps it (SIGTERM, then SIGKILL
after --stop-timeout), also when it fails or is interrupted. --clients clients loop until --duration ends,
each picking at random: /v1/completions or /v1/chat/completions, streamed or not, n > 1 at times, or a
WebSocket /v1/ws with one or two requests in flight. About 30 % of the streams (SSE and WebSocket) are
dropped after their first few chunks, and some WebSocket requests get a cancel message: the server must free
what they held. max_tokens is small (8..48) so requests are short and many. A rejected client waits a bit.

Each request ends in exactly one of:
    completed  a well-formed answer: JSON with n choices and their finish_reason; a stream whose every choice
               finished and that ends with [DONE]; a WebSocket "done" frame with n choices
    cancelled  the client dropped the connection or sent a cancel on purpose
    rejected   429 (with Retry-After) or 503: the server refused it under load, as documented
    error      anything else: another status, a malformed answer, a timeout, an unexpected close
After the load (and a drain of at most --drain seconds for the requests in flight) it polls /metrics until
inflight_kv_blocks_used is 0 or 10 s pass. The server's RSS (VmRSS, /proc/PID/status) is read with nothing
in flight: after a warm-up, in a pause of the load at 1/3 of --duration, after the drain; its fds first, last.
RSS grows until every page of the KV cache has been touched once (finished blocks stay cached as prefixes;
the pool takes a never-used block before it evicts one): slow with the default 1 GiB, so give serve a small
--kv-cache-mb for the drift to measure what requests leave behind.

Exit status 0 when every check passes (unaccounted == 0, errors == 0, KV blocks at the end == 0,
completed > 0, RSS drift from 1/3 of the run to its end below --max-rss-drift-pct, and a server this tool
started exits with 0 on SIGTERM); 1 otherwise, naming the failed checks. Standard library only.
"""
import argparse
import asyncio
import base64
import collections
import ctypes
import hashlib
import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

from atomic_write import write_atomically  # tools/atomic_write.py

OUTCOMES = ("completed", "cancelled", "rejected", "error")
KINDS = ("completion", "completion_stream", "chat", "chat_stream", "ws_completion", "ws_chat")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The three primary colors are",
           "In 1969, the first humans", "Water boils at", "A haiku about the sea:", "List three fruits:"]
# Shared by many chats, so prefix caching has something to reuse (and to release).
SYSTEM = "You are a concise assistant. Answer in one short sentence, without preamble or apology."
QUESTIONS = ["What is the capital of Italy?", "Name a prime number.", "Why is the sky blue?", "Say hello.",
             "What is 2 + 2?", "Suggest a name for a cat.", "What colour is grass?", "Tell me a fun fact."]
# Sampling and stopping fields a request may have: (chance, fields).
OPTIONAL_FIELDS = [(0.5, lambda rng: {"temperature": rng.choice([0.0, 0.7, 1.0]), "seed": rng.randint(0, 1 << 30)}),
                   (0.2, lambda rng: {"top_p": 0.9}), (0.15, lambda rng: {"stop": ["\n"]}),
                   (0.1, lambda rng: {"ignore_eos": True})]


class Failure(Exception):
    """A malformed or unexpected answer: the request counts as an error with this message."""


# What ends one request as an error: a bad answer (unparsable JSON, a missing field), the network, a timeout.
FAILURES = (Failure, ValueError, KeyError, TypeError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError)


def describe(failure):  # a timeout is an OSError too, since 3.11: test it first
    return "timeout" if isinstance(failure, asyncio.TimeoutError) else f"{type(failure).__name__}: {failure}"


# ---------------------------------------------------------------- bookkeeping

class Tally:
    """sent and ended, per kind: every request is counted once when sent and once when it ends."""

    def __init__(self):
        self.sent = collections.Counter()
        self.ended = {outcome: collections.Counter() for outcome in OUTCOMES}
        self.error_details = collections.Counter()
        self.events = collections.Counter()  # what the load did: disconnects, cancels, n > 1, reused connections

    def total(self, outcome=None):
        return sum((self.sent if outcome is None else self.ended[outcome]).values())


class Request:
    def __init__(self, tally, kind, client):
        self.tally, self.kind, self.outcome, self.client = tally, kind, None, client
        tally.sent[kind] += 1
        client["live"].add(self)  # the client's requests in flight: the end of the drain ends them as errors

    def end(self, outcome, detail=""):
        if self.outcome is not None:  # the first ending stands (a later one is the cleanup of a failure)
            return
        self.outcome = outcome
        self.client["live"].discard(self)
        self.client["rejected"] |= outcome == "rejected"
        self.tally.ended[outcome][self.kind] += 1
        if outcome == "error":
            self.tally.error_details[f"{self.kind}: {detail}"[:200]] += 1


# ---------------------------------------------------------------- HTTP/1.1 over asyncio streams

class Http:
    """One HTTP/1.1 connection; every read and write is bounded by `timeout` seconds."""

    def __init__(self, reader, writer, timeout):
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.reusable, self.last_used = False, time.monotonic()

    @classmethod
    async def open(cls, host, port, timeout):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer, timeout)

    async def _io(self, awaitable):
        return await asyncio.wait_for(awaitable, self.timeout)

    async def send(self, method, path, headers=(), body=b""):
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self._io(self.writer.drain())

    async def head(self):
        """(status, headers with lower-case names)."""
        status_line = (await self._io(self.reader.readline())).decode("latin-1")
        if not status_line:
            raise Failure("connection closed before a response")
        match = re.match(r"HTTP/1\.[01] (\d{3})", status_line)
        if not match:
            raise Failure(f"bad status line {status_line[:80]!r}")
        headers = {}
        while True:
            line = (await self._io(self.reader.readline())).decode("latin-1")
            if not line.endswith("\n"):
                raise Failure("connection closed in the response headers")
            if line in ("\r\n", "\n"):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.reusable = headers.get("connection", "").lower() != "close"
        return int(match.group(1)), headers

    async def body(self, headers):
        """Yields the body in pieces: chunked, Content-Length, or up to the close."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await self._io(self.reader.readline())
                if not size_line.endswith(b"\n"):
                    raise Failure("connection closed inside a chunked body")
                size = int(size_line.split(b";")[0].strip() or b"x", 16)
                if size == 0:
                    while (await self._io(self.reader.readline())) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                data = await self._io(self.reader.readexactly(size))
                if await self._io(self.reader.readexactly(2)) != b"\r\n":
                    raise Failure("a chunk without its CRLF")
                yield data
        elif "content-length" in headers:
            yield await self._io(self.reader.readexactly(int(headers["content-length"])))
        else:
            self.reusable = False
            yield await self._io(self.reader.read())

    async def read_all(self, headers):
        return b"".join([piece async for piece in self.body(headers)])

    def close(self, abort=False):  # abort: no flush, as a client that crashed or lost its network
        self.reusable = False
        (self.writer.transport.abort if abort else self.writer.close)()


async def get(host, port, path, timeout):
    conn = await Http.open(host, port, timeout)
    try:
        await conn.send("GET", path, ["Connection: close"])
        status, headers = await conn.head()
        return status, await conn.read_all(headers)
    finally:
        conn.close()


# ---------------------------------------------------------------- WebSocket (RFC 6455, client side)

class WebSocket:
    def __init__(self, conn, rng):
        self.conn, self.rng, self.fragments = conn, rng, []

    @classmethod
    async def connect(cls, host, port, timeout, rng):
        """The socket, or the HTTP status the server refused the upgrade with."""
        conn = await Http.open(host, port, timeout)
        key = base64.b64encode(rng.randbytes(16)).decode()
        await conn.send("GET", "/v1/ws", ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                                          "Sec-WebSocket-Version: 13"])
        status, headers = await conn.head()
        if status != 101:
            conn.close()
            return status
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            conn.close()
            raise Failure("bad Sec-WebSocket-Accept")
        return cls(conn, rng)

    async def send(self, opcode, payload):
        mask, length = self.rng.randbytes(4), len(payload)  # a client masks every frame
        size = (bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + length.to_bytes(2, "big")
                if length < 1 << 16 else bytes([0x80 | 127]) + length.to_bytes(8, "big"))
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.conn.writer.write(bytes([0x80 | opcode]) + size + mask + masked)
        await self.conn._io(self.conn.writer.drain())

    async def send_json(self, message):
        await self.send(0x1, json.dumps(message).encode())

    async def recv(self):
        """The next text message (a str), or None once the server sent a close frame."""
        io, read = self.conn._io, self.conn.reader.readexactly
        while True:
            first, second = await io(read(2))
            if second & 0x80:
                raise Failure("the server masked a frame")
            length = second & 0x7F
            if length >= 126:  # 126: a 16-bit length follows, 127: a 64-bit one
                length = int.from_bytes(await io(read(2 if length == 126 else 8)), "big")
            payload = await io(read(length)) if length else b""
            opcode = first & 0x0F
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                await self.send(0xA, payload)
            elif opcode in (0x1, 0x0):
                self.fragments.append(payload)
                if first & 0x80:
                    text, self.fragments = b"".join(self.fragments).decode(), []
                    return text
            elif opcode != 0xA:
                raise Failure(f"unexpected frame opcode {opcode}")

    async def close(self):
        """Our close frame, then the server's -> how it went (for the report: no request's outcome, as the
        socket's requests have all ended)."""
        try:
            await self.send(0x8, (1000).to_bytes(2, "big"))
            while await self.recv() is not None:
                pass
            return "ws closed cleanly"
        except FAILURES:
            return "ws closed without the server's close frame"
        finally:
            self.conn.close()


# ---------------------------------------------------------------- answers and their checks

def check_choices(choices, expected, field, reasons=("stop", "length")):
    """Choices 0..expected-1, each with one of `reasons` (and text / a message when `field` says so).
    "abort" only where the client cancelled: otherwise the server cut a request short for no reason given."""
    if not isinstance(choices, list) or len(choices) != expected:
        raise Failure(f"{len(choices) if isinstance(choices, list) else choices!r} choices, expected {expected}")
    if sorted(c.get("index") for c in choices) != list(range(expected)):
        raise Failure(f"choice indices {[c.get('index') for c in choices]}")
    for choice in choices:
        if choice.get("finish_reason") not in reasons:
            raise Failure(f"finish_reason {choice.get('finish_reason')!r}")
        if field == "text" and not isinstance(choice.get("text"), str):
            raise Failure("a choice without text")
        if field == "message" and not isinstance((choice.get("message") or {}).get("content"), str):
            raise Failure("a choice without message.content")


def error_outcome(error):
    """An error body of the server -> (outcome, detail)."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    kind, message = error.get("type"), str(error.get("message", ""))
    if kind == "rate_limit_exceeded" or "shutting down" in message:
        return "rejected", ""
    return "error", f"error {kind}: {message[:100]}"


def make_payload(rng, chat, n, stream, ws):
    payload = {"max_tokens": rng.randint(8, 48), "n": n}
    if chat:
        messages = [{"role": "user", "content": rng.choice(QUESTIONS)}]
        payload["messages"] = ([{"role": "system", "content": SYSTEM}] if rng.random() < 0.6 else []) + messages
    elif not ws and rng.random() < 0.1:
        payload["prompt"] = rng.sample(PROMPTS, 2)  # two prompts: n choices each
    else:
        payload["prompt"] = rng.choice(PROMPTS)
    for chance, fields in OPTIONAL_FIELDS:
        if rng.random() < chance:
            payload.update(fields(rng))
    if stream and not ws:
        payload["stream"] = True
        if rng.random() < 0.3:
            payload["stream_options"] = {"include_usage": True}
    return payload


# ---------------------------------------------------------------- the load

class Soak:
    def __init__(self, args, host, port, pid, server, report):
        self.args, self.host, self.port, self.pid, self.server = args, host, port, pid, server
        self.tally, self.deadline = Tally(), 0.0
        self.running, self.paused = asyncio.Event(), 0  # cleared for the pause at 1/3; clients waiting in it
        self.rss_timeline = []  # (seconds into the load, KiB)
        self.report = report  # filled as the run goes: what it measured before it failed is reported too

    async def http_request(self, rng, client, chat):
        stream = rng.random() < 0.5
        n = rng.randint(2, 4) if rng.random() < 0.2 else 1
        payload = make_payload(rng, chat, n, stream, ws=False)
        kind = ("chat" if chat else "completion") + ("_stream" if stream else "")
        expected = n * (len(payload["prompt"]) if isinstance(payload.get("prompt"), list) else 1)
        drop_after = rng.randint(1, 4) if stream and rng.random() < 0.3 else None
        self.tally.events["n>1"] += n > 1
        request = Request(self.tally, kind, client)
        conn = client.get("http")
        try:
            if conn and conn.reusable and time.monotonic() - conn.last_used < 5 and rng.random() < 0.6:
                self.tally.events["keep-alive reuse"] += 1
            else:
                if conn:
                    conn.close()
                conn = client["http"] = await Http.open(self.host, self.port, self.args.op_timeout)
            path = "/v1/chat/completions" if chat else "/v1/completions"
            await conn.send("POST", path, body=json.dumps(payload).encode())
            status, headers = await conn.head()
            if status != 200:
                body = await conn.read_all(headers)
                if status == 429 and "retry-after" not in headers:
                    request.end("error", "429 without Retry-After")
                elif status in (429, 503):
                    request.end("rejected")
                else:
                    request.end("error", f"HTTP {status}: {body[:120]!r}")
            elif not stream:
                answer = json.loads(await conn.read_all(headers))
                check_choices(answer.get("choices"), expected, "message" if chat else "text")
                if not isinstance(answer.get("usage"), dict):
                    raise Failure("no usage")
                request.end("completed")
            else:
                outcome = await self.read_sse(rng, conn, headers, expected, drop_after)
                request.end(*outcome)
        except FAILURES as failure:
            request.end("error", describe(failure))
        finally:
            if conn and (request.outcome != "completed" or not conn.reusable):
                conn.close()
                client["http"] = None
            elif conn:
                conn.last_used = time.monotonic()

    async def read_sse(self, rng, conn, headers, expected, drop_after):
        """Reads an SSE stream -> (outcome, detail); drops the connection after `drop_after` events."""
        if not headers.get("content-type", "").startswith("text/event-stream"):
            raise Failure(f"streamed with content-type {headers.get('content-type')!r}")
        body = conn.body(headers)
        try:
            return await self._read_sse(rng, conn, body, expected, drop_after)
        finally:
            await body.aclose()

    async def _read_sse(self, rng, conn, body, expected, drop_after):
        buffer, events, finished, done, failed = b"", 0, set(), False, None
        async for piece in body:
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                for line in event.decode().splitlines():
                    if not line.startswith("data: "):
                        continue
                    if done:
                        raise Failure("data after [DONE]")
                    if line == "data: [DONE]":
                        done = True
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        failed = failed or error_outcome(chunk["error"])
                        continue
                    for choice in chunk["choices"]:
                        index = choice["index"]
                        if not 0 <= index < expected:
                            raise Failure(f"choice index {index} of {expected}")
                        if choice.get("finish_reason") is not None:
                            if choice["finish_reason"] not in ("stop", "length"):
                                raise Failure(f"finish_reason {choice['finish_reason']!r}")
                            if index in finished:
                                raise Failure(f"choice {index} finished twice")
                            finished.add(index)
                    events += 1
                if drop_after is not None and events >= drop_after and not done:
                    self.tally.events["sse disconnect"] += 1
                    conn.close(abort=rng.random() < 0.5)
                    return "cancelled", ""
        if buffer.strip():
            raise Failure(f"a partial SSE event at the end: {buffer[:80]!r}")
        if failed:
            return failed
        if not done:
            raise Failure("stream ended without [DONE]")
        if finished != set(range(expected)):
            raise Failure(f"choices {sorted(finished)} finished, expected {expected}")
        return "completed", ""

    async def ws_session(self, rng, client):
        count = 2 if rng.random() < 0.4 else 1
        self.tally.events["ws with 2 requests"] += count == 2
        plans = {}
        for i in range(count):
            chat = rng.random() < 0.5
            n = rng.randint(2, 3) if rng.random() < 0.2 else 1
            self.tally.events["n>1"] += n > 1
            # Numbers or strings, as clients write them (the server echoes the JSON); distinct on one socket.
            client_id = rng.randint(0, 9999) * 2 + i if rng.random() < 0.5 else f"req-{rng.randint(0, 9999)}-{i}"
            plans[client_id] = {
                "request": Request(self.tally, "ws_chat" if chat else "ws_completion", client),
                "type": "chat" if chat else "completion", "n": n, "payload": make_payload(rng, chat, n, True, ws=True),
                "cancel_after": rng.randint(0, 3) if rng.random() < 0.2 else None,  # deltas; 0: at once
                "deltas": 0, "cancelled": False}
        drop_after = rng.randint(1, 5) if rng.random() < 0.3 else None
        ws, deltas = None, 0
        try:
            ws = await WebSocket.connect(self.host, self.port, self.args.op_timeout, rng)
            if isinstance(ws, int):
                for plan in plans.values():
                    plan["request"].end("rejected" if ws in (429, 503) else "error", f"upgrade refused: HTTP {ws}")
                return
            for client_id, plan in plans.items():
                await ws.send_json({"id": client_id, "type": plan["type"], **plan["payload"]})
                if plan["cancel_after"] == 0:
                    await self.ws_cancel(ws, client_id, plan)
            while any(plan["request"].outcome is None for plan in plans.values()):
                text = await ws.recv()
                if text is None:
                    raise Failure("the server closed the WebSocket with requests running")
                message = json.loads(text)
                plan = plans.get(message.get("id"))
                if plan is None or plan["request"].outcome is not None:
                    raise Failure(f"a frame for id {message.get('id')!r}, not running")
                if message["type"] == "delta":
                    if not 0 <= message["index"] < plan["n"] or not isinstance(message["text"], str):
                        raise Failure(f"bad delta {text[:120]}")
                    plan["deltas"] += 1
                    deltas += 1
                    if plan["cancel_after"] is not None and plan["deltas"] >= plan["cancel_after"]:
                        await self.ws_cancel(ws, message["id"], plan)
                    if drop_after is not None and deltas >= drop_after:
                        self.tally.events["ws disconnect"] += 1
                        if rng.random() < 0.5:
                            await ws.send(0x8, (1001).to_bytes(2, "big"))  # a close frame, then gone
                        ws.conn.close(abort=rng.random() < 0.5)
                        for other in plans.values():
                            other["request"].end("cancelled")
                        return
                elif message["type"] == "done":
                    check_choices(message.get("choices"), plan["n"], None,
                                  ("stop", "length", "abort") if plan["cancelled"] else ("stop", "length"))
                    if not isinstance(message.get("usage"), dict):
                        raise Failure("a done frame without usage")
                    plan["request"].end("cancelled" if plan["cancelled"] else "completed")
                elif message["type"] == "error":
                    plan["request"].end(*error_outcome(message.get("error")))
                else:
                    raise Failure(f"frame type {message['type']!r}")
            self.tally.events[await ws.close()] += 1
        except FAILURES as failure:
            for plan in plans.values():
                plan["request"].end("error", describe(failure))
        finally:
            if isinstance(ws, WebSocket):
                ws.conn.close()

    async def ws_cancel(self, ws, client_id, plan):
        if not plan["cancelled"]:
            plan["cancelled"] = True
            self.tally.events["ws cancel"] += 1
            await ws.send_json({"id": client_id, "type": "cancel"})

    async def client(self, index):
        rng = random.Random(self.args.seed * 7919 + index)
        state = {"http": None, "live": set(), "rejected": False}
        try:
            while time.monotonic() < self.deadline and not self.server_gone():
                if not self.running.is_set():  # the pause at 1/3: nothing in flight, no socket open
                    if state["http"]:
                        state["http"].close()
                    state["http"], self.paused = None, self.paused + 1
                    await self.running.wait()
                    self.paused -= 1
                if rng.random() < 0.6:
                    await self.http_request(rng, state, chat=rng.random() < 0.5)
                else:
                    await self.ws_session(rng, state)
                if state["rejected"]:  # as a client should (Retry-After says 1 s): no storm of retries
                    state["rejected"] = False
                    await asyncio.sleep(rng.uniform(0.25, 1.0))
        except asyncio.CancelledError:  # by the end of the drain: a request still running is stuck
            for request in list(state["live"]):
                request.end("error", "still running when the load was stopped (the drain ran out, or an interrupt)")
            raise
        finally:
            if state["http"]:
                state["http"].close()

    def server_gone(self):
        return self.server is not None and self.server.process.poll() is not None

    async def kv_blocks_used(self):
        status, body = await get(self.host, self.port, "/metrics", self.args.op_timeout)
        match = re.search(rb"^inflight_kv_blocks_used (\S+)$", body, re.M)
        if status != 200 or not match:
            raise Failure(f"/metrics: HTTP {status}, no inflight_kv_blocks_used")
        return int(float(match.group(1)))

    async def sample_rss(self, start):
        while not self.server_gone():
            self.rss_timeline.append((round(time.monotonic() - start, 1), read_rss_kib(self.pid)))
            await asyncio.sleep(2)

    async def warm_up(self):
        """/health, then a few requests (not counted): the first ones allocate what the server keeps for good."""
        for _ in range(60):
            try:
                if (await get(self.host, self.port, "/health", 2))[0] == 200:
                    break
            except FAILURES:
                pass
            await asyncio.sleep(0.5)
        else:
            raise Failure("/health did not answer 200 within 30 s")
        warm, rng = Soak(self.args, self.host, self.port, self.pid, self.server, {}), random.Random(self.args.seed)
        client = {"http": None, "live": set(), "rejected": False}
        for chat in (False, True, False, True):
            await warm.http_request(rng, client, chat)
        await warm.ws_session(rng, client)
        if warm.tally.total("error"):
            raise Failure(f"warm-up failed: {dict(warm.tally.error_details)}")

    async def poll_kv_blocks(self):
        """inflight_kv_blocks_used until it is 0 or 10 s pass -> (the last value, seconds polled)."""
        await asyncio.sleep(1.2)  # engine stats refresh once a second: an older value is no answer yet
        kv, started = None, time.monotonic()
        while True:
            try:
                kv = await self.kv_blocks_used()
            except FAILURES as failure:
                self.report["metrics_error"] = describe(failure)
            if kv == 0 or time.monotonic() - started > 10:
                return kv, round(time.monotonic() - started, 1)
            await asyncio.sleep(0.5)

    async def run(self):
        args, report, rss = self.args, self.report, {}
        await self.warm_up()
        await asyncio.sleep(1)
        report["rss_kib"], report["fds"] = rss, {"start": count_fds(self.pid)}
        rss["start"] = read_rss_kib(self.pid)
        start = time.monotonic()
        self.deadline = start + args.duration
        sampler = asyncio.create_task(self.sample_rss(start))
        clients = [asyncio.create_task(self.client(i)) for i in range(args.clients)]
        self.running.set()
        await asyncio.sleep(args.duration / 3)
        # Under load, RSS swings by many MiB with what is in flight (buffers freed once it ends): "third"
        # and "end" are both read with the server idle, so the drift compares like with like.
        self.running.clear()
        paused = time.monotonic()
        while self.paused < sum(not task.done() for task in clients) and time.monotonic() - paused < args.drain:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # the server's side of the sockets closes
        rss["third"], ended_at_third = read_rss_kib(self.pid), sum(map(self.tally.total, OUTCOMES))
        report["pause_seconds"] = round(time.monotonic() - paused, 1)
        self.running.set()
        await asyncio.sleep(max(self.deadline - time.monotonic(), 0))
        rss["end_under_load"] = read_rss_kib(self.pid)
        _, pending = await asyncio.wait(clients, timeout=max(args.drain, 1))
        report["load_seconds"], report["drain_timed_out"] = round(time.monotonic() - start, 1), bool(pending)
        for task in pending:  # a request still running now is stuck: cancelling it counts it as an error
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        for task in clients:
            if not task.cancelled() and task.exception():
                raise task.exception()
        sampler.cancel()
        report["kv_blocks_used_end"], report["kv_poll_seconds"] = await self.poll_kv_blocks()
        await asyncio.sleep(1)  # the server's side of our last sockets closes
        rss["end"], report["fds"]["end"] = read_rss_kib(self.pid), count_fds(self.pid)
        self.rss_timeline.append((round(time.monotonic() - start, 1), rss["end"]))
        # Per request ended in between, a leak of a few KiB each shows where 1 % of the RSS would not.
        ended = max(sum(map(self.tally.total, OUTCOMES)) - ended_at_third, 1)
        report["rss_growth_bytes_per_request"] = round((rss["end"] - rss["third"]) * 1024 / ended)


# ---------------------------------------------------------------- the server process and /proc

def read_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Failure(f"no VmRSS for pid {pid}")


def count_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def die_with_parent():
    """In the child before exec: SIGKILL if this script dies without reaping it (e.g. killed by ctest)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServerProcess:
    def __init__(self, inflight, serve_args, start_timeout=120):  # loading the model takes seconds
        self.log = collections.deque(maxlen=200)  # the tail of its stderr, shown when a check fails
        self.port, self.listening = None, threading.Event()
        self.process = subprocess.Popen([inflight, "serve", "--port", "0", *serve_args], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        errors="replace", preexec_fn=die_with_parent)
        self.pid = self.process.pid
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + start_timeout
        while not self.listening.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(10)
                raise Failure("inflight serve did not start listening:\n" + "".join(self.log))

    def _read_stderr(self):
        for line in self.process.stderr:
            self.log.append(line)
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)  # the server names the port it bound
            if match and self.port is None:
                self.port = int(match.group(1))
                self.listening.set()

    def stop(self, timeout):
        """SIGTERM, SIGKILL after `timeout` s -> (exit code, whether it had to be killed)."""
        killed = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                killed = True
        self.reader.join(5)
        return self.process.returncode, killed


def loopback_url(url, parser):
    parsed = urllib.parse.urlsplit(url)
    try:
        loopback = parsed.hostname == "localhost" or ipaddress.ip_address(parsed.hostname or "").is_loopback
    except ValueError:
        loopback = False
    if parsed.scheme != "http" or not loopback:
        parser.error(f"--url {url!r}: give http://HOST:PORT with a loopback host (127.0.0.0/8, ::1, localhost)")
    return parsed.hostname, parsed.port or 80


# ---------------------------------------------------------------- the report

def summarize(args, tally, report):
    by_kind = {kind: {"sent": tally.sent[kind], **{o: tally.ended[o][kind] for o in OUTCOMES}} for kind in KINDS}
    totals = {"sent": tally.total(), **{o: tally.total(o) for o in OUTCOMES}}
    totals["unaccounted"] = totals["sent"] - sum(totals[o] for o in OUTCOMES)
    rss = report.get("rss_kib", {})
    drift = round((rss["end"] - rss["third"]) / rss["third"] * 100, 3) if rss.get("end") and rss.get("third") else None
    summary = {"config": {"duration_s": args.duration, "clients": args.clients, "seed": args.seed,
                          "serve_args": args.serve_args, "url": args.url},
               **totals, "by_kind": by_kind, "error_details": dict(tally.error_details.most_common(20)),
               "events": dict(tally.events), **report, "rss_drift_pct": drift}
    checks = {"unaccounted == 0": totals["unaccounted"] == 0, "errors == 0": totals["error"] == 0,
              "kv blocks at end == 0": report.get("kv_blocks_used_end") == 0, "completed > 0": totals["completed"] > 0,
              f"rss drift < {args.max_rss_drift_pct} %": drift is not None and drift < args.max_rss_drift_pct}
    if "server_exit_code" in report:
        checks["server exits 0 on SIGTERM"] = report["server_exit_code"] == 0 and not report["server_killed"]
    if report.get("failure"):
        checks["the run itself"] = False
    summary.update(checks=checks, passed=all(checks.values()))
    return summary


def print_table(summary):
    columns = ("sent",) + OUTCOMES
    print(f"\n{'kind':<20}" + "".join(f"{c:>11}" for c in columns))
    for kind, row in summary["by_kind"].items():
        print(f"{kind:<20}" + "".join(f"{row[c]:>11}" for c in columns))
    print(f"{'total':<20}" + "".join(f"{summary[c]:>11}" for c in columns))
    print(f"unaccounted (sent - sum): {summary['unaccounted']}")
    print("load: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["events"].items())))
    for detail, count in summary["error_details"].items():
        print(f"  error x{count}: {detail}")
    rss, fds = summary.get("rss_kib", {}), summary.get("fds", {})
    mib = {k: f"{v / 1024:.1f}" for k, v in rss.items() if v is not None}
    get = summary.get
    print(f"load ran {get('load_seconds')} s (drain timed out: {get('drain_timed_out')}); server open fds: "
          f"start {fds.get('start')}, end {fds.get('end')}")
    print(f"kv blocks in use at end: {get('kv_blocks_used_end')} (polled {get('kv_poll_seconds')} s)")
    print(f"server RSS MiB, idle: start {mib.get('start')}, at 1/3 {mib.get('third')} (a pause of "
          f"{get('pause_seconds')} s), end {mib.get('end')}; under load at the end {mib.get('end_under_load')}")
    print(f"RSS drift (end - third) / third = {get('rss_drift_pct')} %: "
          f"{get('rss_growth_bytes_per_request')} bytes per request ended in between")
    if "server_exit_code" in summary:
        print(f"server exit code on SIGTERM: {summary['server_exit_code']} (killed: {summary['server_killed']})")
    if summary.get("failure"):
        print(f"the run failed: {summary['failure']}")
    for name, ok in summary["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")


def parse_args(argv):
    serve_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Arguments after -- go to `inflight serve`.")
    parser.add_argument("--inflight", default=os.path.join(root, "build", "bin", "inflight"))
    parser.add_argument("--url", help="attach to this running server (loopback only) instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, for its RSS and fds")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument("--drain", type=float, default=60, help="seconds for requests in flight at the end")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--op-timeout", type=float, default=30, help="seconds for any one socket operation")
    parser.add_argument("--stop-timeout", type=float, default=30, help="seconds after SIGTERM before SIGKILL")
    parser.add_argument("--max-rss-drift-pct", type=float, default=1.0)
    parser.add_argument("--json", help="write the summary as JSON to this path")
    args = parser.parse_args(argv)
    args.host, args.port = loopback_url(args.url, parser) if args.url else ("127.0.0.1", None)
    if args.url and args.pid is None:
        parser.error("--url needs --pid (the RSS and fd checks read /proc/PID)")
    if args.url and serve_args:
        parser.error("arguments after -- go to a server this tool starts, not to one given by --url")
    if args.duration <= 0 or args.clients < 1 or not 0 <= args.drain <= 600:
        parser.error("--duration > 0, --clients >= 1, 0 <= --drain <= 600")
    args.serve_args = serve_args
    return args


def main(argv):
    args = parse_args(argv)
    # SIGTERM (ctest's timeout, a CI runner) unwinds like Ctrl-C, so the finally below reaps the server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server, soak, interrupted, report = None, None, False, {}
    try:
        if args.url:
            host, port, pid = args.host, args.port, args.pid
        else:
            server = ServerProcess(args.inflight, args.serve_args)
            host, port, pid = "127.0.0.1", server.port, server.pid
        print(f"soak: {args.clients} clients, {args.duration:g} s, http://{host}:{port}, pid {pid}", flush=True)
        soak = Soak(args, host, port, pid, server, report)
        asyncio.run(soak.run())
        if server and server.process.poll() is not None:
            report["failure"] = f"the server exited during the run with {server.process.returncode}"
    except (Failure, OSError) as failure:
        report["failure"] = f"{type(failure).__name__}: {failure}"
    except KeyboardInterrupt:
        interrupted, report["failure"] = True, "interrupted"
    finally:
        if server:
            report["server_exit_code"], report["server_killed"] = server.stop(args.stop_timeout)
    summary = summarize(args, soak.tally if soak else Tally(), report)
    summary["rss_timeline_kib"] = soak.rss_timeline if soak else []
    print_table(summary)
    if args.json:
        write_atomically(args.json, json.dumps(summary, indent=2))
    if not summary["passed"]:
        print("soak: FAILED: " + ", ".join(name for name, ok in summary["checks"].items() if not ok))
        if server:
            print("server log (tail):\n" + "".join(list(server.log)[-40:]))
    return 130 if interrupted else 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
