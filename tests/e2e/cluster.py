"""Runs inflight engine nodes and gateways as separate processes for the cluster tests.

Every process starts on a free port (port 0; it prints the port it bound), its stderr is read by a thread
(so a chatty process never blocks on a full pipe, and tests can wait for a log line), and every process a
`Cluster` started is killed and reaped when the `with` block ends, also on failure.
Only the standard library: the scripts that need `openai` or `websockets` import those themselves.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time


class Process:
    """One inflight process; `lines` is its stderr so far."""

    def __init__(self, argv, label, env=None, prefix=()):
        self.label = label
        self.argv = argv
        self.lines = []
        self._reader_done = False
        self._seen = threading.Condition()
        self.process = subprocess.Popen([*prefix, *argv], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        text=True, env=env, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            sys.stderr.write(f"[{self.label}] {line}")
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._reader_done = True
            self._seen.notify_all()

    def wait_for(self, pattern, timeout=60, start=0):
        """The first match of `pattern` in the log from line `start` on; raises after `timeout` seconds or
        when the process exits without logging it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                if self._reader_done:
                    raise AssertionError(f"{self.label} exited ({self.process.wait()}) without logging /{pattern}/")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.label} did not log /{pattern}/ within {timeout} s")
                self._seen.wait(min(left, 0.2))

    def log_has(self, pattern):
        with self._seen:
            return any(re.search(pattern, line) for line in self.lines)

    def alive(self):
        return self.process.poll() is None

    def signal(self, number):
        self.process.send_signal(number)

    def kill(self):
        """SIGKILL (its own process group: start_new_session) and reap."""
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)

    def stop(self, timeout=60):
        """SIGTERM and the exit code (a clean drain is 0)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


class Node(Process):
    def __init__(self, inflight, *args, label="node", port=0, env=None, prefix=()):
        super().__init__([inflight, "node", "--threads", "1", "--port", str(port), *args], label, env, prefix)
        match = self.wait_for(r"ready: model '[^']*' as (\S+) on (\S+):(\d+)")
        self.name, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        self.address = f"{self.host}:{self.port}"


class Gateway(Process):
    def __init__(self, inflight, *args, label="gateway", env=None):
        super().__init__([inflight, "serve", "--port", "0", *args], label, env)
        self.port = int(self.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
        joins = re.compile(r"nodes may join on \S+:(\d+)")
        self.cluster_port = next((int(m.group(1)) for m in map(joins.search, self.lines) if m), None)

    def get(self, path, timeout=30):
        """(status, parsed JSON body) of a GET."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            return response.status, json.loads(body) if body else None
        finally:
            connection.close()

    def post(self, path, body, timeout=120):
        """(status, headers, parsed JSON body) of a non-streamed POST."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), json.loads(response.read())
        finally:
            connection.close()

    def nodes(self):
        status, body = self.get("/v1/nodes")
        assert status == 200, (status, body)
        return {n["name"]: n for n in body["data"]}

    def wait_nodes(self, predicate, timeout=30, what="the nodes"):
        """Polls /v1/nodes until predicate(nodes by name) holds; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.nodes()
            try:
                if predicate(nodes):
                    return nodes
            except KeyError:
                pass  # a node not listed yet (the router's first snapshot)
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached within {timeout} s; /v1/nodes: {json.dumps(nodes)}")
            time.sleep(0.05)


def all_up(count):
    return lambda nodes: len(nodes) == count and all(n["state"] == "up" for n in nodes.values())


class Cluster:
    """`with Cluster(inflight) as c:` ... every process started through it is reaped at the end."""

    def __init__(self, inflight):
        self.inflight = inflight
        self.processes = []

    def node(self, *args, **kwargs):
        node = Node(self.inflight, *args, **kwargs)
        self.processes.append(node)
        return node

    def gateway(self, *args, **kwargs):
        gateway = Gateway(self.inflight, *args, **kwargs)
        self.processes.append(gateway)
        return gateway

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.kill()
        return False


def stream_completion(port, body, on_event=None, timeout=120):
    """POSTs a streamed completion; returns (status, [parsed SSE data events], saw_done). `on_event(i, event)`
    runs for each data event as it arrives."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/completions", json.dumps({**body, "stream": True}),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return response.status, [json.loads(response.read())], False
        events, done = [], False
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            events.append(json.loads(data))
            if on_event:
                on_event(len(events) - 1, events[-1])
        return 200, events, done
    finally:
        connection.close()


def free_port():
    """A TCP port free on 127.0.0.1 a moment ago (for a listener that cannot take port 0)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_streams(port, body, count):
    """Starts `count` streamed completions of `body` at once, one thread each; returns (records, threads).
    While it runs a record counts `tokens` (text deltas so far) and `times` (each event's arrival); at the
    end it also holds `status`, `events` and `done` (stream_completion's results)."""
    records = [{"tokens": 0, "times": []} for _ in range(count)]

    def run(record):
        def on_event(_, event):
            record["times"].append(time.monotonic())
            if "error" not in event and event["choices"][0]["finish_reason"] is None:
                record["tokens"] += 1  # a text delta (the final chunk carries only the finish reason)
        record["status"], record["events"], record["done"] = stream_completion(port, body, on_event)

    threads = [threading.Thread(target=run, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    return records, threads


def completed(record, reason="length"):
    """The stream ended with [DONE] after a final chunk of this finish reason (no error event)."""
    events = record.get("events") or []
    return bool(record.get("done") and events and "error" not in events[-1]
                and events[-1]["choices"][0]["finish_reason"] == reason)


def failed(record):
    return any("error" in event for event in record.get("events") or [])


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.01)


def traffic_returns(gateway, address, body, count):
    """`count` streamed requests at once through the gateway all complete, and `address` (a node back from
    a failure) takes at least one of them."""
    before = gateway.nodes()[address]["routed_total"]
    records, threads = start_streams(gateway.port, body, count)
    for thread in threads:
        thread.join(timeout=300)
    assert all(completed(r) for r in records), [r.get("events", [])[-1:] for r in records]
    nodes = gateway.wait_nodes(lambda n: n[address]["in_flight"] == 0, what="the requests released")
    assert nodes[address]["routed_total"] > before, f"no traffic returned to {address}: {nodes}"
