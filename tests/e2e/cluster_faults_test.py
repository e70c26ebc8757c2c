"""Cluster links that must be refused or that fail without closing, and gateways that die.

Usage: cluster_faults_test.py PATH_TO_INFLIGHT

1. Refusals, each with a clear log line on both sides and no crash: a wrong cluster secret, a secret on
   one side only (either side), a protocol-version mismatch (the message names both versions). The one
   good node (its secret from $INFLIGHT_CLUSTER_SECRET, the gateway's from --cluster-secret-file) serves.
2. A node that stalls without closing its socket (SIGSTOP): the heartbeat's link timeout marks it down, its
   streaming request ends with an SSE error event, the other node's request completes; after SIGCONT it is
   back up, holds no orphaned sequence, and takes requests again.
3. Two gateways share the nodes; one is SIGKILLed mid-stream: the nodes keep running, cancel only its
   orphaned sequences, finish the other gateway's, and end with no KV block in use.
4. TLS between gateway and node (certificates made here with the openssl CLI); a plaintext gateway gets
   nothing from a TLS node and neither crashes.
5. One model per cluster: a node joining with another GGUF (a copy with a renamed model) is refused after
   its welcome, names both fingerprints, and is told so (it stops reporting and tries again later).
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from cluster import Cluster, all_up, free_port, traffic_returns, completed, failed, start_streams, stream_completion, wait_until

LONG = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True, "temperature": 0}


def refusals(cluster, workdir):
    secret_file = os.path.join(workdir, "secret")
    with open(secret_file, "w") as out:
        out.write("right-secret\n")
    wrong = cluster.node("--cluster-secret", "wrong-secret", label="wrong-secret")
    good = cluster.node(label="good", env={**os.environ, "INFLIGHT_CLUSTER_SECRET": "right-secret"})
    open_node = cluster.node(label="no-secret")
    future = cluster.node("--cluster-secret-file", secret_file, label="version-99",
                          env={**os.environ, "INFLIGHT_PROTOCOL_VERSION_OVERRIDE": "99"})
    gateway = cluster.gateway("--cluster-secret-file", secret_file, *[a for n in (wrong, good, open_node, future)
                                                                       for a in ("--node", n.address)])
    nodes = gateway.wait_nodes(lambda n: n[good.address]["state"] == "up" and all(
        n[x.address]["state"] == "refused" for x in (wrong, open_node, future)), what="one node up, three refused")
    print({name: (n["state"], n["error"]) for name, n in nodes.items()})
    assert "wrong cluster secret" in nodes[wrong.address]["error"], nodes
    wrong.wait_for(r"refused gateway '[^']+': wrong cluster secret", timeout=10)
    gateway.wait_for(rf"node {wrong.address} is refused: .*wrong cluster secret", timeout=10)
    # The gateway sees the node's challenge offer no secret and refuses it itself.
    assert "the node has no cluster secret but this gateway has one" in nodes[open_node.address]["error"], nodes
    gateway.wait_for(rf"node {open_node.address} is refused: the node has no cluster secret", timeout=10)
    version_error = nodes[future.address]["error"]
    # The gateway's version (include/inflight/cluster_protocol.hpp) and the one the node was told to speak.
    assert re.search(r"the gateway speaks cluster protocol [0-9]+, this node speaks 99", version_error), version_error
    future.wait_for(r"refused gateway .*protocol version mismatch: the gateway speaks cluster protocol [0-9]+, this node "
                    r"speaks 99", timeout=10)

    status, _, body = gateway.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4,
                                                       "temperature": 0})
    assert status == 200 and "Paris" in body["choices"][0]["text"], (status, body)
    gateway.wait_nodes(lambda n: n[good.address]["routed_total"] >= 1, what="the request counted on the good node")

    # A gateway without a secret, to a node that has one.
    plain = cluster.gateway("--node", good.address, label="no-secret-gateway")
    nodes = plain.wait_nodes(lambda n: n[good.address]["state"] == "refused", what="refused for lacking a secret")
    assert "requires a cluster secret" in nodes[good.address]["error"], nodes
    status, headers, body = plain.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4})
    assert status == 503 and headers.get("Retry-After") and body["error"]["message"], (status, body)
    for process in (wrong, good, open_node, future, gateway, plain):
        assert process.alive(), f"{process.label} died"
    for process in (plain, gateway, wrong, good, open_node, future):
        assert process.stop() == 0, process.label


def stalled_node(cluster):
    stalled = cluster.node(label="stalled")
    healthy = cluster.node(label="healthy")
    gateway = cluster.gateway("--node", stalled.address, "--node", healthy.address, "--heartbeat-ms", "250",
                              "--link-timeout-ms", "1500")
    gateway.wait_nodes(all_up(2), what="both nodes up")
    records, threads = start_streams(gateway.port, LONG, 2)
    wait_until(lambda: all(r["tokens"] >= 3 for r in records), 60, "both requests streaming")
    stalled.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a request hung on the stalled node"
    broken = [r for r in records if failed(r)]
    assert len(broken) == 1 and broken[0]["done"], [r["events"][-1:] for r in records]
    error_after = broken[0]["times"][-1] - stopped_at
    print(f"stall: SIGSTOP to the affected client's error event: {error_after * 1000:.0f} ms (link timeout 1500 ms)")
    assert error_after < 1.5 + 3.0, error_after
    other = next(r for r in records if r is not broken[0])
    assert completed(other), other["events"][-1:]
    nodes = gateway.wait_nodes(lambda n: n[stalled.address]["state"] == "down", what="the stalled node down")
    assert nodes[stalled.address]["error"], nodes

    stalled.signal(signal.SIGCONT)
    gateway.wait_nodes(lambda n: n[stalled.address]["state"] == "up" and n[stalled.address]["running"] == 0
                       and n[stalled.address]["kv_blocks_used"] == 0, timeout=30,
                       what="the resumed node up with no orphaned sequence")
    traffic_returns(gateway, stalled.address, LONG, 2)
    return gateway, stalled, healthy


def two_gateways_then_one_dies(cluster, gateway, a, b):
    """Two gateways share the nodes; when one is SIGKILLed, only its sequences are cancelled."""
    mine, _ = start_streams(gateway.port, LONG, 2)
    wait_until(lambda: all(r["tokens"] >= 3 for r in mine), 60, "the first gateway's requests streaming")
    second = cluster.gateway("--node", a.address, "--node", b.address, label="gateway-2")
    second.wait_nodes(all_up(2), what="both nodes up under the second gateway")
    theirs, threads = start_streams(second.port, {**LONG, "max_tokens": 200}, 2)
    wait_until(lambda: all(r["tokens"] >= 3 for r in theirs), 60, "the second gateway's requests streaming")
    second.wait_nodes(lambda n: all(x["running"] == 2 for x in n.values()), what="two sequences on each node")
    gateway.kill()
    killed_at = time.monotonic()
    second.wait_nodes(lambda n: all(x["running"] == 1 for x in n.values()), timeout=10,
                      what="the dead gateway's sequences cancelled, the other's running")
    print(f"gateway death: SIGKILL to its orphaned sequences cancelled on both nodes (as the other gateway sees "
          f"them): {(time.monotonic() - killed_at) * 1000:.0f} ms")
    for thread in threads:
        thread.join(timeout=120)
    assert all(completed(r) for r in theirs), [r["events"][-1:] for r in theirs]
    second.wait_nodes(lambda n: all(x["running"] == 0 and x["kv_blocks_used"] == 0 for x in n.values()),
                      what="both nodes idle, no KV block in use")
    status, _, body = second.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4,
                                                      "temperature": 0})
    assert status == 200 and "Paris" in body["choices"][0]["text"], (status, body)
    assert a.alive() and b.alive()
    assert second.stop() == 0 and a.stop() == 0 and b.stop() == 0


def tls(cluster, workdir):
    key, cert = os.path.join(workdir, "key.pem"), os.path.join(workdir, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=inflight-test"], check=True, capture_output=True)
    tls_args = ["--tls-certificate", cert, "--tls-key", key, "--tls-ca", cert]
    node = cluster.node(*tls_args, "--cluster-secret", "s", label="tls-node")
    assert node.log_has(r"\(TLS\)"), "the node did not say it speaks TLS"
    gateway = cluster.gateway("--node", node.address, "--cluster-secret", "s", *tls_args, label="tls-gateway")
    gateway.wait_nodes(all_up(1), what="the node up over TLS")
    status, _, body = gateway.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4,
                                                       "temperature": 0})
    assert status == 200 and "Paris" in body["choices"][0]["text"], (status, body)
    status, events, done = stream_completion(gateway.port, {"prompt": "1, 2, 3,", "max_tokens": 8, "temperature": 0})
    assert status == 200 and done and events[-1]["choices"][0]["finish_reason"] == "length", events[-1:]

    # A plaintext gateway dials the TLS node again and again (its handshakes fail) while the TLS gateway
    # streams: the healthy link must not suffer (see actors/openssl_error_queue.cpp).
    records, threads = start_streams(gateway.port, LONG, 1)
    wait_until(lambda: records[0]["tokens"] >= 3, 60, "the TLS stream started")
    mark = len(gateway.lines)
    plain = cluster.gateway("--node", node.address, "--cluster-secret", "s", label="plaintext-gateway")
    plain.wait_for(r"is down: cannot connect", timeout=10)
    time.sleep(2.5)  # a few more failed handshakes (the backoff starts at 100 ms)
    nodes = plain.nodes()
    assert nodes[node.address]["state"] != "up", nodes
    status, _, _ = plain.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4}, timeout=30)
    assert status == 503, status
    threads[0].join(timeout=120)
    assert completed(records[0]), f"the TLS stream broke while a plaintext gateway knocked: {records[0]['events'][-1:]}"
    assert not any("link lost" in line for line in gateway.lines[mark:]), "the TLS link was cut by failed handshakes"
    assert node.alive() and plain.alive() and gateway.alive()
    for process in (plain, gateway, node):
        assert process.stop() == 0, process.label


def different_model(cluster, workdir):
    """A copy of the model whose general.name differs by one letter: a valid GGUF with another fingerprint."""
    import struct
    source = os.environ.get("INFLIGHT_MODEL") or os.path.join(os.path.dirname(__file__), "..", "..", "models",
                                                              "SmolLM2-135M-Instruct.Q4_1.gguf")
    data = bytearray(open(source, "rb").read())
    key = data.find(b"general.name")
    length = struct.unpack("<Q", data[key + 16:key + 24])[0]
    assert key > 0 and struct.unpack("<I", data[key + 12:key + 16])[0] == 8 and length > 0  # a string value
    data[key + 24] = ord("X") if data[key + 24] != ord("X") else ord("Y")
    other = os.path.join(workdir, "SmolLM2-135M-Instruct.Q4_1.gguf")  # the same file name: the same model name
    with open(other, "wb") as out:
        out.write(data)

    first = cluster.node(label="model-a")
    gateway = cluster.gateway("--node", first.address, "--cluster-port", str(free_port()), label="one-model-gateway")
    gateway.wait_nodes(all_up(1), what="the first node up")
    stranger = cluster.node("--model", other, "--name", "stranger", "--join", f"127.0.0.1:{gateway.cluster_port}",
                            label="other-model")
    nodes = gateway.wait_nodes(lambda n: n.get("stranger", {}).get("state") == "refused", what="the stranger refused")
    assert "different model" in nodes["stranger"]["error"] and "fingerprint" in nodes["stranger"]["error"], nodes
    stranger.wait_for(r"a gateway dropped this node", timeout=10)
    status, _, body = gateway.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4,
                                                       "temperature": 0})
    assert status == 200 and "Paris" in body["choices"][0]["text"], (status, body)
    assert gateway.nodes()[first.address]["state"] == "up"
    for process in (gateway, first, stranger):
        assert process.stop() == 0, process.label


def main():
    inflight = sys.argv[1]
    with tempfile.TemporaryDirectory() as workdir, Cluster(inflight) as cluster:
        refusals(cluster, workdir)
        gateway, stalled, healthy = stalled_node(cluster)
        two_gateways_then_one_dies(cluster, gateway, stalled, healthy)
        tls(cluster, workdir)
        different_model(cluster, workdir)
    print("cluster faults: all checks passed")


if __name__ == "__main__":
    main()
