"""SIGKILL of an engine node while it streams, behind a gateway with a second node.

Usage: cluster_failover_test.py PATH_TO_INFLIGHT

1. Node A takes one sequence at a time (--max-num-seqs 1), node B eight. Six streamed requests arrive at
   once and the gateway spreads them: A runs one and queues two, B runs three. A is killed once every
   running request has streamed tokens:
   - the request A was streaming ends with an SSE error event (an OpenAI error object) and [DONE], within
     1 s of the kill (a generous bound; the real figure is printed);
   - the two that A had queued (no token streamed yet) are resubmitted to B and complete, unaware;
   - B's three complete untouched; then B holds no KV block and no sequence.
2. A restarts on its port; the gateway reconnects and routes to it again.
3. With only A up, a non-streamed request runs there; A is killed: 502 with an error object. With every
   node down: 503 with Retry-After, /health 503, never a hang.
Timings are printed as `failover: ...` lines.
"""
import sys
import threading
import time

from cluster import Cluster, all_up, completed, failed, start_streams, stream_completion, traffic_returns, wait_until

LONG = {"prompt": "Once upon a time", "max_tokens": 160, "ignore_eos": True, "temperature": 0}


def kill_a_streaming_node(cluster, gateway, a, b):
    records, threads = start_streams(gateway.port, LONG, 6)
    # A runs one, B three: four requests stream; A's other two wait in its queue.
    wait_until(lambda: sum(r["tokens"] >= 3 for r in records) >= 4, 120, "four requests streaming")
    gateway.wait_nodes(lambda n: n[a.address]["routed_total"] == 3 and n[b.address]["routed_total"] == 3,
                       what="three requests routed to each node")
    tokens_at_kill = [r["tokens"] for r in records]
    killed_at = time.monotonic()
    a.kill()
    for thread in threads:
        thread.join(timeout=300)
        assert not thread.is_alive(), "a request hung after the kill"

    broken = [r for r in records if failed(r)]
    assert len(broken) == 1, f"expected exactly A's streaming request to fail: {[r['events'][-1:] for r in records]}"
    error_event = broken[0]["events"][-1]
    assert broken[0]["done"] and error_event["error"]["type"] and error_event["error"]["message"], error_event
    assert broken[0]["tokens"] > 0 and broken[0]["status"] == 200
    error_after = broken[0]["times"][-1] - killed_at
    print(f"failover: SIGKILL to the affected client's error event: {error_after * 1000:.0f} ms")
    assert error_after <= 1.0, f"the error reached the client {error_after:.2f} s after the kill"

    resubmitted = [r for r, before in zip(records, tokens_at_kill) if before == 0]
    assert len(resubmitted) == 2, tokens_at_kill
    for r in records:
        if r is broken[0]:
            continue
        assert completed(r), f"an unaffected request did not complete: {r['events'][-1:]}"
        assert r["tokens"] > LONG["max_tokens"] // 2, r["tokens"]
    first_resubmitted_token = min(r["times"][0] for r in resubmitted) - killed_at
    print(f"failover: SIGKILL to the first resubmitted request's first token: {first_resubmitted_token * 1000:.0f} ms")

    nodes = gateway.wait_nodes(lambda n: n[a.address]["state"] == "down" and n[b.address]["running"] == 0
                               and n[b.address]["kv_blocks_used"] == 0 and n[b.address]["in_flight"] == 0,
                               what="A down, B idle with no KV block in use")
    assert nodes[a.address]["in_flight"] == 0 and nodes[a.address]["error"], nodes
    assert nodes[b.address]["routed_total"] == 5, nodes


def restart_and_reuse(cluster, gateway, a_port, b):
    a = cluster.node("--max-num-seqs", "1", port=a_port, label="node-a2")
    gateway.wait_nodes(lambda n: n[a.address]["state"] == "up", timeout=30, what="A back up")
    traffic_returns(gateway, a.address, LONG, 4)
    return a


def kill_the_last_node(gateway, a, b):
    b.kill()
    gateway.wait_nodes(lambda n: n[b.address]["state"] == "down", what="B down")
    generated_before = gateway.nodes()[a.address]["generated_tokens"]
    result = {}

    def non_streamed():
        result["answer"] = gateway.post("/v1/completions", {**LONG, "max_tokens": 4000})
        result["at"] = time.monotonic()

    thread = threading.Thread(target=non_streamed)
    thread.start()
    gateway.wait_nodes(lambda n: n[a.address]["generated_tokens"] > generated_before + 5, what="A generating")
    killed_at = time.monotonic()
    a.kill()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the non-streamed request hung after the kill"
    status, _, body = result["answer"]
    print(f"failover: SIGKILL to the non-streamed request's {status}: {(result['at'] - killed_at) * 1000:.0f} ms")
    assert status == 502 and body["error"]["message"] and body["error"]["type"], (status, body)

    gateway.wait_nodes(lambda n: all(node["state"] == "down" for node in n.values()), what="every node down")
    started = time.monotonic()
    status, headers, body = gateway.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4})
    assert status == 503 and headers.get("Retry-After") and body["error"]["message"], (status, headers, body)
    assert time.monotonic() - started < 5, "every node down: the 503 took too long"
    status, _, _ = stream_completion(gateway.port, {"prompt": "Hello", "max_tokens": 4})
    assert status == 503, status
    status, health = gateway.get("/health")
    assert status == 503 and health["nodes_up"] == 0, (status, health)


def main():
    inflight = sys.argv[1]
    with Cluster(inflight) as cluster:
        a = cluster.node("--max-num-seqs", "1", label="node-a")
        b = cluster.node("--max-num-seqs", "8", label="node-b")
        gateway = cluster.gateway("--node", a.address, "--node", b.address)
        gateway.wait_nodes(all_up(2), what="both nodes up")
        kill_a_streaming_node(cluster, gateway, a, b)
        a = restart_and_reuse(cluster, gateway, a.port, b)
        kill_the_last_node(gateway, a, b)
        assert gateway.stop() == 0
    print("cluster failover: all checks passed")


if __name__ == "__main__":
    main()
