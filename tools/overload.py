#!/usr/bin/env python3
"""Overload figures for `inflight serve`: what an operator needs to know before putting it in front of users.

Each scenario starts its own server on a free loopback port, drives it past one of its limits, measures how
it refuses and whether it recovers, and always reaps it (SIGTERM, then SIGKILL):

  flood        N streamed completions at once against --max-waiting/--max-num-seqs: 200s finish their SSE
               stream, the rest get 429 with Retry-After, fast; /health stays quick; KV blocks return to 0.
  slowloris    S connections trickling a request header; real clients' latency against their baseline
               from the same run; the server closes the attackers at about --header-timeout-s.
  connections  M+K connections against --max-connections M: the K extra get 503 with Retry-After at once,
               and /health answers again once the M idle ones close.
  secrets      --api-key: wrong and right keys sent, and neither may appear in the server's stderr.

Usage: overload.py [--quick] [--scenario flood,slowloris,...] [--json PATH] [-- extra serve args]
Exit 0 when every check passes, 1 naming the failed ones. Latencies are reported, never asserted: the
machines this runs on are shared, so a slow probe is a figure to read, not a verdict. Standard library only.
"""
import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from atomic_write import write_atomically  # tools/atomic_write.py

SCENARIOS = ("flood", "slowloris", "connections", "secrets")
# --quick: sized for a ctest run of about a minute on two busy cores, each limit still crossed severalfold.
QUICK = {"clients": 200, "max_waiting": 32, "slowloris": 100, "header_timeout_s": 3, "trickle_s": 1.0, "duration_s": 15,
         "baseline_s": 4, "max_connections": 16, "extra_connections": 8}


def percentile(values, p):
    """Nearest-rank percentile; None for no values (a figure that was not measured, not a zero)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def spread_ms(seconds):
    return {"p50": ms(percentile(seconds, 50)), "max": ms(max(seconds, default=None))}


def count_by(labels):
    """{label: how many}, the most frequent first."""
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# --- the server under test ---------------------------------------------------------------------------

class Server:
    """One `inflight serve` on a free port. Its stderr is read by a thread into `lines`, so the pipe never
    fills however much it logs, and the secrets scenario can search all of it after the exit."""

    def __init__(self, inflight, args, verbose=False, label="server"):
        self.label, self.verbose = label, verbose
        self.lines, self.port, self.exit_code = [], None, None
        self._listening = threading.Event()
        self.process = subprocess.Popen([inflight, "serve", "--port", "0", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(60) or self.port is None:
            self.stop()
            raise RuntimeError(f"{label}: not listening within 60 s; stderr:\n" + "".join(self.lines[-20:]))

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)
            if self.verbose:
                sys.stderr.write(f"[{self.label}] {line}")
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)  # the server names the port it bound
            if match and self.port is None:
                self.port = int(match.group(1))
                self._listening.set()
        self._listening.set()  # exited before listening: wake the constructor

    def alive(self):
        return self.process.poll() is None

    def stop(self, grace_s=25):
        """SIGTERM, then SIGKILL to its process group after `grace_s`; returns the exit code. The grace
        covers the server's own shutdown grace (10 s by default) for requests still running."""
        try:
            if self.alive():
                self.process.send_signal(signal.SIGTERM)
            self.exit_code = self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
            self.exit_code = "killed after SIGTERM did not stop it"
        self._reader.join(10)  # stderr reaches EOF once the process is gone
        return self.exit_code


def metrics(port, timeout=5):
    """/metrics as {series: value}, the series with its labels as written."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        return parse_metrics(connection.getresponse().read().decode())
    finally:
        connection.close()


def parse_metrics(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            try:
                values[series] = float(value)
            except ValueError:
                pass
    return values


class ProcSampler(threading.Thread):
    """The server's VmRSS and open fds every 100 ms, for start/peak/end figures (a leak shows as an end
    well above the start)."""

    def __init__(self, pid, interval_s=0.1, max_s=1800):
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.max_s = pid, interval_s, max_s
        self.samples = []  # (rss MiB, fds)
        self._done = threading.Event()

    def sample(self):
        try:
            with open(f"/proc/{self.pid}/status") as status:
                rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            return round(rss_kb / 1024, 1), len(os.listdir(f"/proc/{self.pid}/fd"))
        except (OSError, StopIteration, ValueError):
            return None  # the process is gone

    def run(self):
        deadline = time.monotonic() + self.max_s
        while not self._done.is_set() and time.monotonic() < deadline:
            sample = self.sample()
            if sample:
                self.samples.append(sample)
            self._done.wait(self.interval_s)

    def finish(self):
        self._done.set()
        self.join(5)
        final = self.sample()  # after the scenario settled
        if final:
            self.samples.append(final)
        if not self.samples:
            return {}
        rss, fds = [s[0] for s in self.samples], [s[1] for s in self.samples]
        return {"rss_mib": {"start": rss[0], "peak": max(rss), "end": rss[-1]},
                "fds": {"start": fds[0], "peak": max(fds), "end": fds[-1]}}


def probe_health(port, interval_s, max_s, stop, out):
    """GET /health every `interval_s` on one keep-alive connection until `stop`; sends back
    [(seconds since start, latency s, status or error text)]. Runs in a process of its own: in the
    tool's event loop, the flood's clients would delay the probes and the delay would be blamed on the
    server."""
    samples, connection = [], None
    start = time.monotonic()
    next_at = start
    while not stop.is_set() and time.monotonic() - start < max_s:
        sent = time.monotonic()
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            samples.append((sent - start, time.monotonic() - sent, response.status))
        except (OSError, http.client.HTTPException) as error:
            samples.append((sent - start, time.monotonic() - sent, f"{type(error).__name__}: {error}"))
            connection.close()
            connection = None
        next_at = max(next_at + interval_s, time.monotonic())  # late: go on from now, no burst to catch up
        stop.wait(max(0.0, next_at - time.monotonic()))
    out.send(samples)


class HealthProber:
    def __init__(self, port, interval_s=0.05, max_s=900):
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        self._stop = context.Event()
        self._process = context.Process(target=probe_health, args=(port, interval_s, max_s, self._stop, send),
                                        daemon=True)
        self._process.start()

    def finish(self):
        self._stop.set()
        samples = self._receive.recv() if self._receive.poll(15) else []
        self._process.join(5)
        self._process.kill()  # no-op once it exited
        latencies = [s[1] for s in samples if s[2] == 200]
        failed = [s for s in samples if s[2] != 200]
        return {"probes": len(samples), "failed": len(failed), "failures": [str(s[2]) for s in failed[:5]],
                "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
                "max_ms": ms(max(latencies, default=None)), "over_100ms": sum(1 for x in latencies if x > 0.1),
                "over_100ms_at_s": [round(s[0], 2) for s in samples if s[2] == 200 and s[1] > 0.1][:20]}


# --- HTTP/1.1 on asyncio streams ----------------------------------------------------------------------

def request_bytes(method, path, body=None, headers=None):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


async def read_head(reader):
    """(status, {lower-case header: value}) of one response."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed before a status line")
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {line[:80]!r}")
    headers = {}
    for _ in range(100):
        field = await reader.readline()
        if field in (b"\r\n", b"\n"):
            return int(parts[1]), headers
        if not field:
            raise ConnectionError("closed inside the response headers")
        name, _, value = field.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError("more than 100 response header lines")


async def read_body(reader, headers):
    """The body as sent: chunked (SSE), by Content-Length, or up to the close."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        for _ in range(100_000):
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
            if size == 0:
                for _ in range(100):  # trailers, up to the blank line
                    if await reader.readline() in (b"\r\n", b"\n", b""):
                        return bytes(body)
                raise ValueError("more than 100 trailer lines")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        raise ValueError("more than 100000 chunks")
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read(1 << 20)  # delimited by the close


async def exchange(port, method, path, body=None, headers=None, timeout=60):
    """One request on a fresh connection: {status, headers, body, seconds} (seconds: sent to body read)."""
    async def run():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            sent = time.monotonic()
            writer.write(request_bytes(method, path, body, headers))
            await writer.drain()
            status, response_headers = await read_head(reader)
            content = b"" if status == 101 else await read_body(reader, response_headers)
            return {"status": status, "headers": response_headers, "body": content, "seconds": time.monotonic() - sent}
        finally:
            writer.close()
    return await asyncio.wait_for(run(), timeout)


def openai_error_type(body):
    try:
        return json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return None


def sse_problem(body):
    """Why a streamed completion is not a complete one (None when it is): it must end with
    `data: [DONE]`, and the last chunk before it must carry a finish_reason."""
    events = [line[6:] for line in body.decode(errors="replace").splitlines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return "the stream did not end with data: [DONE]"
    try:
        chunks = [json.loads(event) for event in events[:-1]]
    except ValueError:
        return "a data event is not JSON"
    if not chunks:
        return "no chunk before [DONE]"
    if any("error" in chunk for chunk in chunks):
        return "an error event in the stream"
    if not any(choice.get("finish_reason") for choice in chunks[-1].get("choices", [])):
        return "no finish_reason in the last chunk"
    return None


class Checks(list):
    def check(self, name, passed, detail=""):
        self.append({"check": name, "passed": bool(passed), "detail": detail})


def with_server(opts, checks, servers, label, serve_args, run):
    """Starts the scenario's server (appended to `servers`) and its sampler, returns `run(server)`'s figures
    with the server's RSS and fds, and reaps the server whatever happens."""
    server = Server(opts.inflight, [*serve_args, *opts.serve_args], opts.verbose, label)
    servers.append(server)
    try:
        sampler = ProcSampler(server.process.pid)
        sampler.start()
        figures = run(server)
        time.sleep(0.5)  # closed connections settle before the end sample
        figures.update(sampler.finish())
        checks.check(f"server alive after the {label} scenario", server.alive())
        return figures
    finally:
        server.stop()


# --- flood --------------------------------------------------------------------------------------------

async def flood_one(connection, body, deadline):
    if isinstance(connection, BaseException):
        return {"outcome": "error", "why": f"connect: {type(connection).__name__}: {connection}"}
    reader, writer = connection

    async def run():
        sent = time.monotonic()
        writer.write(request_bytes("POST", "/v1/completions", body))
        await writer.drain()
        status, headers = await read_head(reader)
        at_status = time.monotonic() - sent
        content = await read_body(reader, headers)
        result = {"status": status, "status_s": at_status, "seconds": time.monotonic() - sent}
        if status == 200:
            problem = sse_problem(content)
            return {**result, "outcome": "ok" if problem is None else "error", "why": problem}
        if status == 429:
            return {**result, "outcome": "429", "retry_after": headers.get("retry-after"),
                    "error_type": openai_error_type(content)}
        return {**result, "outcome": "error", "why": f"HTTP {status}: {content[:120]!r}"}

    try:
        return await asyncio.wait_for(run(), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        return {"outcome": "error", "why": "no complete answer within the flood timeout"}
    except (OSError, ValueError, asyncio.IncompleteReadError) as error:
        return {"outcome": "error", "why": f"{type(error).__name__}: {error}"}
    finally:
        writer.close()


async def run_flood(opts, server, checks):
    port = server.port
    deadline = time.monotonic() + opts.flood_timeout_s
    bodies = [json.dumps({"prompt": f"Request {i}: a short story about the number {i}.", "max_tokens": opts.max_tokens,
                          "stream": True}).encode() for i in range(opts.clients)]
    # Every client connects first, then all send together: the flood arrives at once, not at connect pace.
    connections = await asyncio.gather(*(asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                                         for _ in range(opts.clients)), return_exceptions=True)
    started = time.monotonic()
    results = await asyncio.gather(*(flood_one(c, b, deadline) for c, b in zip(connections, bodies)))
    wall_s = time.monotonic() - started

    ok = [r for r in results if r["outcome"] == "ok"]
    rejected = [r for r in results if r["outcome"] == "429"]
    errors = [r for r in results if r["outcome"] == "error"]
    no_retry_after = [r for r in rejected if not r.get("retry_after")]
    bad_429_body = [r for r in rejected if r.get("error_type") != "rate_limit_exceeded"]
    figures = {
        "clients": opts.clients, "connected": sum(1 for c in connections if not isinstance(c, BaseException)),
        "wall_s": round(wall_s, 2), "http_200": sum(1 for r in results if r.get("status") == 200),
        "completed": len(ok), "http_429": len(rejected), "errors": len(errors),
        "error_reasons": count_by(r["why"] for r in errors),
        "429_with_retry_after": len(rejected) - len(no_retry_after),
        "429_retry_after_values": sorted({r.get("retry_after") or "" for r in rejected}),
        "429_rate_limit_exceeded_body": len(rejected) - len(bad_429_body),
        "429_latency_ms": spread_ms([r["status_s"] for r in rejected]),
        "200_latency_ms": spread_ms([r["seconds"] for r in ok]),
    }
    checks.check("no error outcomes", not errors, f"{len(errors)} errors: {figures['error_reasons']}" if errors else "")
    checks.check("accepted requests completed", figures["http_200"] == len(ok) and ok,
                 f"{figures['http_200']} got 200, {len(ok)} completed their stream")
    checks.check("the flood reached the waiting limit (some 429s)", rejected, f"{len(rejected)} got 429")
    checks.check("every 429 had Retry-After", not no_retry_after, f"{len(no_retry_after)} without")
    checks.check("every 429 had an OpenAI rate_limit_exceeded error", not bad_429_body, f"{len(bad_429_body)} without")
    return figures


def kv_back_to_zero(port, timeout_s=10):
    """(seconds until inflight_kv_blocks_used read 0, or None, and the last value read)."""
    start = time.monotonic()
    value = None
    while time.monotonic() - start < timeout_s:
        try:
            value = metrics(port).get("inflight_kv_blocks_used")
        except (OSError, http.client.HTTPException):
            value = None
        if value == 0:
            return round(time.monotonic() - start, 2), value
        time.sleep(0.2)
    return None, value


def flood_with_probes(opts, server, checks):
    prober = HealthProber(server.port)
    time.sleep(1.0)  # the prober's first probes, before the flood
    figures = asyncio.run(run_flood(opts, server, checks))
    figures["health"] = health = prober.finish()
    checks.check("health probes all answered 200", health["failed"] == 0 and health["probes"],
                 f"{health['failed']} of {health['probes']} failed: {health['failures']}")
    seconds, value = kv_back_to_zero(server.port)
    figures["kv_blocks_used_after"], figures["kv_back_to_0_after_s"] = value, seconds
    checks.check("KV blocks back to 0 after the flood", seconds is not None, f"inflight_kv_blocks_used = {value}")
    after = metrics(server.port)
    figures["server_429_total"] = after.get('inflight_requests_rejected_total{status="429"}', 0)
    figures["connections_open_after"] = after.get("inflight_connections_open")
    return figures


def scenario_flood(opts, checks, servers):
    limits = ["--max-waiting", str(opts.max_waiting), "--max-num-seqs", str(opts.max_num_seqs)]
    return with_server(opts, checks, servers, "flood", limits, lambda server: flood_with_probes(opts, server, checks))


# --- slowloris ----------------------------------------------------------------------------------------

async def loris_slot(port, stop_at, trickle_s, records):
    """One attacker: a partial request header, then one more header line every `trickle_s`, until the server
    closes the connection; then again on a new connection, until `stop_at`."""
    for attempt in range(10_000):
        if time.monotonic() >= stop_at:
            return
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            records.append({"connect_failed": True})
            await asyncio.sleep(0.5)
            continue
        first_byte = time.monotonic()
        record = {"closed_after_s": None, "received": 0}
        try:
            writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Attempt: {attempt}\r\n".encode())
            for line in range(10_000):
                left = stop_at - time.monotonic()
                if left <= 0:
                    break
                try:
                    data = await asyncio.wait_for(reader.read(4096), min(trickle_s, left))
                except TimeoutError:
                    writer.write(f"X-Trickle-{line}: x\r\n".encode())
                    continue
                if not data:  # the server closed it
                    record["closed_after_s"] = time.monotonic() - first_byte
                    break
                record["received"] += len(data)  # an answer (a 408?) before the close
        except OSError:  # reset by the server
            record["closed_after_s"] = time.monotonic() - first_byte
        record["age_s"] = time.monotonic() - first_byte
        records.append(record)
        writer.close()


async def real_clients(port, count, seconds, max_tokens):
    """`count` clients each sending non-streamed completions back to back for `seconds`:
    [(latency s, failure text or None)]."""
    stop_at = time.monotonic() + seconds
    results = []
    body = json.dumps({"prompt": "The capital of France is", "max_tokens": max_tokens}).encode()

    async def client():
        for _ in range(100_000):
            if time.monotonic() >= stop_at:
                return
            try:
                r = await exchange(port, "POST", "/v1/completions", body, timeout=60)
                choices = json.loads(r["body"]).get("choices") if r["status"] == 200 else None
                results.append((r["seconds"], None if choices else f"HTTP {r['status']}: {r['body'][:100]!r}"))
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as error:
                results.append((None, f"{type(error).__name__}: {error}"))
                await asyncio.sleep(0.1)
    await asyncio.gather(*(client() for _ in range(count)))
    return results


def latency_figures(results):
    latencies = [r[0] for r in results if r[1] is None]
    return {"requests": len(results), "succeeded": len(latencies), "failed": len(results) - len(latencies),
            "failures": sorted({r[1] for r in results if r[1]})[:5],
            "p50_ms": ms(percentile(latencies, 50)), "max_ms": ms(max(latencies, default=None))}


async def run_slowloris(opts, port, checks):
    baseline = latency_figures(await real_clients(port, opts.real_clients, opts.baseline_s, opts.max_tokens))
    records = []
    stop_at = time.monotonic() + opts.duration_s
    attack = asyncio.gather(*(loris_slot(port, stop_at, opts.trickle_s, records) for _ in range(opts.slowloris)))
    await asyncio.sleep(0.5)  # the attackers' first bytes are in
    during = latency_figures(await real_clients(port, opts.real_clients, max(1.0, stop_at - time.monotonic()),
                                                opts.max_tokens))
    await asyncio.wait_for(attack, opts.trickle_s + 10)

    connections = [r for r in records if not r.get("connect_failed")]
    closed = [r["closed_after_s"] for r in connections if r["closed_after_s"] is not None]
    # A connection may outlive the header timeout by scheduling noise, not by seconds: the slack.
    limit_s = opts.header_timeout_s + max(2.0, opts.header_timeout_s / 2)
    outlived = [r for r in connections if r["closed_after_s"] is None and r["age_s"] > limit_s]
    ratio = lambda key: (round(during[key] / baseline[key], 2) if during[key] and baseline[key] else None)
    figures = {
        "slots": opts.slowloris, "header_timeout_s": opts.header_timeout_s, "trickle_s": opts.trickle_s,
        "duration_s": opts.duration_s, "baseline": baseline, "during_attack": during,
        "latency_ratio": {"p50": ratio("p50_ms"), "max": ratio("max_ms")},
        "attack_connections": len(connections), "connect_failures": len(records) - len(connections),
        "closed_by_server": len(closed),
        "closed_after_s": {"min": round(min(closed), 2), "p50": round(percentile(closed, 50), 2),
                           "max": round(max(closed), 2)} if closed else {},
        "open_at_end": sum(1 for r in connections if r["closed_after_s"] is None),
        "open_past_timeout": len(outlived), "bytes_received_by_attackers": sum(r["received"] for r in connections),
    }
    checks.check("real clients all succeeded (baseline and attack), attackers all connected",
                 baseline["failed"] == 0 and during["failed"] == 0 and during["succeeded"] > 0
                 and not figures["connect_failures"],
                 f"baseline {baseline['failed']} failed, attack {during['failed']} failed of {during['requests']}: "
                 f"{during['failures'] or baseline['failures']}; attackers' connect failures {figures['connect_failures']}")
    checks.check(f"no slowloris connection outlived the header timeout (+{limit_s - opts.header_timeout_s:g} s)",
                 not outlived and (closed or opts.duration_s <= limit_s),
                 f"{len(outlived)} outlived it, {len(closed)} closed by the server")
    return figures


def scenario_slowloris(opts, checks, servers):
    return with_server(opts, checks, servers, "slowloris", ["--header-timeout-s", str(opts.header_timeout_s)],
                       lambda server: asyncio.run(run_slowloris(opts, server.port, checks)))


# --- connections --------------------------------------------------------------------------------------

async def on_connection(reader, writer, path, timeout=5):
    """A GET on an open keep-alive connection: (status, body)."""
    writer.write(request_bytes("GET", path))
    await writer.drain()
    status, headers = await asyncio.wait_for(read_head(reader), timeout)
    return status, await asyncio.wait_for(read_body(reader, headers), timeout)


async def refused_one(port, timeout_s):
    """An extra connection: it sends a /health request and must be answered 503 + Retry-After, fast."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout_s)
    except (OSError, TimeoutError) as error:
        return {"outcome": f"connect: {type(error).__name__}: {error}"}
    connected = time.monotonic()
    try:
        writer.write(request_bytes("GET", "/health"))
        status, headers = await asyncio.wait_for(read_head(reader), timeout_s)
        at_status = time.monotonic() - connected
        body = await asyncio.wait_for(read_body(reader, headers), timeout_s)
        return {"outcome": "503" if status == 503 else f"HTTP {status}", "seconds": at_status,
                "retry_after": headers.get("retry-after"), "error_type": openai_error_type(body)}
    except TimeoutError:
        return {"outcome": f"no answer within {timeout_s} s (hangs)"}
    except (OSError, ValueError, asyncio.IncompleteReadError) as error:
        return {"outcome": f"{type(error).__name__}: {error}"}
    finally:
        writer.close()


async def run_connections(opts, port, checks):
    m, k = opts.max_connections, opts.extra_connections
    # The first of the M idle connections doubles as a keep-alive /metrics channel: it tells when the server
    # has accepted all M (a fresh connection to ask would itself be refused).
    idle = [await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5) for _ in range(m)]
    channel = idle[0]
    open_seen = None
    for _ in range(50):
        status, body = await on_connection(*channel, "/metrics")
        open_seen = parse_metrics(body.decode()).get("inflight_connections_open")
        if open_seen is not None and open_seen >= m:
            break
        await asyncio.sleep(0.1)
    extras = await asyncio.gather(*(refused_one(port, 5) for _ in range(k)))
    status, body = await on_connection(*channel, "/metrics")
    refused_while_full = parse_metrics(body.decode()).get("inflight_connections_refused_total")
    for reader, writer in idle:
        writer.close()
    health_status, health_after_s, started = None, None, time.monotonic()
    for _ in range(50):  # the server notices the closes within a moment
        try:
            r = await exchange(port, "GET", "/health", timeout=5)
            health_status = r["status"]
            if health_status == 200:
                health_after_s = round(time.monotonic() - started, 2)
                break
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as error:
            health_status = f"{type(error).__name__}: {error}"
        await asyncio.sleep(0.1)
    after = parse_metrics((await exchange(port, "GET", "/metrics", timeout=5))["body"].decode())

    got_503 = [e for e in extras if e["outcome"] == "503"]
    with_retry_after = [e for e in got_503 if e.get("retry_after")]
    others = count_by(e["outcome"] for e in extras if e["outcome"] != "503")
    figures = {
        "max_connections": m, "extra": k, "open_seen_by_server": open_seen,
        "extra_got_503": len(got_503), "503_with_retry_after": len(with_retry_after),
        "503_with_error_body": sum(1 for e in got_503 if e.get("error_type")), "extra_other_outcomes": others,
        "503_latency_ms": spread_ms([e["seconds"] for e in got_503]),
        "refused_total_while_full": refused_while_full,
        "refused_total": after.get("inflight_connections_refused_total"),
        "health_after_close": health_status, "health_ok_after_s": health_after_s,
        "connections_open_after": after.get("inflight_connections_open"),
    }
    checks.check("extra connections got 503 with Retry-After", len(with_retry_after) == k,
                 f"{len(got_503)} of {k} got 503, {len(with_retry_after)} with Retry-After; others: {others}")
    checks.check("/health works again after the idle connections close", health_after_s is not None,
                 f"last: {health_status}")
    checks.check("inflight_connections_refused_total counts the extras", (figures["refused_total"] or 0) >= k,
                 f"{figures['refused_total']}")
    return figures


def scenario_connections(opts, checks, servers):
    return with_server(opts, checks, servers, "connections", ["--max-connections", str(opts.max_connections)],
                       lambda server: asyncio.run(run_connections(opts, server.port, checks)))


# --- secrets ------------------------------------------------------------------------------------------

async def run_secrets(port, right, wrong, checks):
    completion = json.dumps({"prompt": "Hello", "max_tokens": 4}).encode()
    streamed = json.dumps({"prompt": "Hello", "max_tokens": 4, "stream": True}).encode()
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    # (what, method, path, body, headers, expected status); every way a key reaches the server.
    cases = [
        ("completion, wrong key", "POST", "/v1/completions", completion, {"Authorization": f"Bearer {wrong}"}, 401),
        ("models, wrong key", "GET", "/v1/models", None, {"Authorization": f"Bearer {wrong}"}, 401),
        ("models, wrong key as a non-Bearer", "GET", "/v1/models", None, {"Authorization": wrong}, 401),
        ("metrics, wrong key in the query", "GET", f"/metrics?api_key={wrong}", None, None, 401),
        ("WebSocket, wrong key in the query", "GET", f"/v1/ws?api_key={wrong}", None, upgrade, 401),
        ("oversized header with a wrong key", "GET", "/v1/models", None,
         {"Authorization": f"Bearer {wrong}", "X-Pad": "p" * 9000}, 431),
        ("completion, right key", "POST", "/v1/completions", completion, {"Authorization": f"Bearer {right}"}, 200),
        ("streamed completion, right key", "POST", "/v1/completions", streamed, {"Authorization": f"Bearer {right}"}, 200),
        ("bad JSON, right key", "POST", "/v1/completions", b"{not json", {"Authorization": f"Bearer {right}"}, 400),
        ("WebSocket, right key in the query", "GET", f"/v1/ws?api_key={right}", None, upgrade, 101),
    ]
    statuses = {}
    for what, method, path, body, headers, expected in cases:
        try:
            statuses[what] = (await exchange(port, method, path, body, headers, timeout=30))["status"]
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as error:
            statuses[what] = f"{type(error).__name__}: {error}"
        checks.check(f"{what}: HTTP {expected}", statuses[what] == expected, f"got {statuses[what]}")
    return statuses


def scenario_secrets(opts, checks, servers):
    # Distinctive values: neither occurs in a log by chance, and each half is searched for on its own too.
    right = "sk-right-" + secrets.token_hex(12)
    wrong = "sk-wrong-" + secrets.token_hex(12)
    figures = with_server(opts, checks, servers, "secrets", ["--api-key", right],
                          lambda server: {"statuses": asyncio.run(run_secrets(server.port, right, wrong, checks))})
    server = servers[0]  # stopped: its stderr is complete
    log = "".join(server.lines)
    leaked = [name for name, value in (("right key", right), ("wrong key", wrong),
                                       ("right key's random part", right[9:]), ("wrong key's random part", wrong[9:]))
              if value in log]
    checks.check("neither API key appears in the server's stderr", not leaked, f"found: {leaked}")
    return {**figures, "stderr_lines": len(server.lines), "keys_in_stderr": leaked}


# --- the report ---------------------------------------------------------------------------------------

def flatten(figures, prefix=""):
    """(name, text) rows: a nested group's figures as group.name, a spread (p50/max, start/peak/end) on one row."""
    for key, value in figures.items():
        if isinstance(value, dict) and set(value) & {"p50", "start"}:
            yield prefix + key, "  ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, dict) and value and key != "error_reasons":
            yield from flatten(value, prefix + key + ".")
        else:
            yield prefix + key, json.dumps(value) if isinstance(value, (list, dict)) else value


def print_table(scenario, figures, checks, exit_code):
    print(f"\n== {scenario} ==")
    rows = list(flatten(figures)) + [("server exit code", exit_code)]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for result in checks:
        detail = f"  ({result['detail']})" if result["detail"] and not result["passed"] else ""
        print(f"  [{'PASS' if result['passed'] else 'FAIL'}] {result['check']}{detail}")


def parse_args(argv):
    serve_args = []
    if "--" in argv:
        at = argv.index("--")
        argv, serve_args = argv[:at], argv[at + 1:]
    default_inflight = Path(__file__).resolve().parent.parent / "build" / "bin" / "inflight"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Arguments after -- go to every inflight serve.")
    p.add_argument("--inflight", default=str(default_inflight), help="the inflight binary (default: %(default)s)")
    p.add_argument("--scenario", default="all", help=f"all, or a comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--quick", action="store_true", help="reduced sizes for a ctest run (about a minute)")
    p.add_argument("--json", metavar="PATH", help="write every figure and check here")
    p.add_argument("--verbose", action="store_true", help="echo the servers' stderr")
    g = p.add_argument_group("flood")
    g.add_argument("--clients", type=int, default=400)
    g.add_argument("--max-waiting", type=int, default=64)
    g.add_argument("--max-num-seqs", type=int, default=16)
    g.add_argument("--max-tokens", type=int, default=16)
    g.add_argument("--flood-timeout-s", type=float, default=180)
    g = p.add_argument_group("slowloris")
    g.add_argument("--slowloris", type=int, default=300, help="attacking connections")
    g.add_argument("--header-timeout-s", type=int, default=10)
    g.add_argument("--trickle-s", type=float, default=2.0, help="seconds between an attacker's header lines")
    g.add_argument("--real-clients", type=int, default=4)
    g.add_argument("--duration-s", type=float, default=30, help="the attack's length")
    g.add_argument("--baseline-s", type=float, default=8, help="real clients alone, before the attack")
    g = p.add_argument_group("connections")
    g.add_argument("--max-connections", type=int, default=64)
    g.add_argument("--extra-connections", type=int, default=32)
    if "--quick" in argv:
        p.set_defaults(**QUICK)  # the defaults only: options given still win
    opts = p.parse_args(argv)
    opts.serve_args = serve_args
    opts.scenarios = SCENARIOS if opts.scenario == "all" else tuple(s.strip() for s in opts.scenario.split(","))
    if not set(opts.scenarios) <= set(SCENARIOS):
        p.error(f"--scenario: all, or a comma list of {', '.join(SCENARIOS)}")
    return opts


def main(argv):
    opts = parse_args(argv)
    if not os.access(opts.inflight, os.X_OK):
        print(f"overload: {opts.inflight} is not an executable (cmake --build build --target inflight)", file=sys.stderr)
        return 2
    # 400+ client sockets, plus the server's own (it inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20), hard))
    # SIGTERM (a ctest timeout) unwinds like an exception, so every `finally` reaps its server.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    runners = {"flood": scenario_flood, "slowloris": scenario_slowloris, "connections": scenario_connections,
               "secrets": scenario_secrets}
    report, failed = {"options": {k: v for k, v in vars(opts).items() if k != "scenarios"}}, []
    for scenario in opts.scenarios:
        checks = Checks()
        started = time.monotonic()
        servers = []  # what the scenario started, for the exit code and the log even when it aborts
        try:
            figures = runners[scenario](opts, checks, servers)
        except Exception as error:  # a scenario that could not run is a failed check, and the next still runs
            figures = {"aborted": f"{type(error).__name__}: {error}"}
            checks.check("scenario ran to the end", False, figures["aborted"])
        figures["scenario_s"] = round(time.monotonic() - started, 1)
        server = servers[0] if servers else None
        exit_code = server.exit_code if server else None
        if server:
            checks.check("server exited 0 on SIGTERM", exit_code == 0, f"exit code {exit_code}")
        report[scenario] = {"figures": figures, "server_exit_code": exit_code, "checks": checks}
        print_table(scenario, figures, checks, exit_code)
        bad = [r for r in checks if not r["passed"]]
        failed += [f"{scenario}: {r['check']} ({r['detail']})" for r in bad]
        if bad and server and not opts.verbose:
            sys.stderr.write(f"[{scenario}] server stderr, last lines:\n" + "".join(server.lines[-15:]))
        sys.stdout.flush()
    report["failed"] = failed
    if opts.json:
        write_atomically(opts.json, json.dumps(report, indent=2) + "\n")
    print("\nall checks passed" if not failed else "\nFAILED:\n  " + "\n  ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
