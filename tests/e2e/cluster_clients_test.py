"""A gateway and two engine nodes as separate processes on loopback, used by the official clients.

Usage: cluster_clients_test.py PATH_TO_INFLIGHT

- the `openai` client (completions, chat, streamed chat, logit_bias, a JSON constraint) and the `websockets`
  client work through the gateway unchanged, and greedy answers equal those of the single-process
  `inflight serve`;
- /v1/models, /health and /v1/nodes describe the cluster; both nodes took requests;
- a third node joins the running gateway (--join), takes its share of concurrent requests (a second node
  joining under its name is refused), and leaves on SIGTERM (drained: exit code 0, listed as down).
Any failed check raises, so the process exits non-zero; every process is reaped.
"""
import asyncio
import concurrent.futures
import json
import sys
import urllib.request

import openai
import websockets

from cluster import Cluster, all_up, free_port
from inflight_server import InflightServer

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Water boils at", "The opposite of hot is"]
CHAT = [{"role": "user", "content": "Name three colours."}]


def answers(port):
    """Greedy completions, a chat answer, a streamed chat answer and WebSocket answers from a server."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    result = {"model": model}
    for prompt in PROMPTS:
        completion = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
        result[prompt] = completion.choices[0].text
        assert completion.usage.completion_tokens == 12 or completion.choices[0].finish_reason == "stop", completion
    chat = client.chat.completions.create(model=model, messages=CHAT, max_tokens=16, temperature=0)
    result["chat"] = chat.choices[0].message.content
    stream = client.chat.completions.create(model=model, messages=CHAT, max_tokens=16, temperature=0, stream=True)
    result["chat_stream"] = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    # Fields that cross to the node inside sampling_params and sequence_submit: the logit bias, a constraint.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/tokenize", data=json.dumps({"prompt": " London"}).encode(),
                                     headers={"Content-Type": "application/json"})
    london = json.load(urllib.request.urlopen(request, timeout=30))["tokens"]
    assert len(london) == 1, london
    biased = client.completions.create(model=model, prompt=PROMPTS[0], max_tokens=3, temperature=0,
                                       logit_bias={str(london[0]): 100})
    result["logit_bias"] = biased.choices[0].text
    assert result["logit_bias"] == " London London London", biased
    constrained = client.chat.completions.create(model=model, messages=CHAT, max_tokens=48, temperature=0,
                                                 response_format={"type": "json_object"})
    result["json_object"] = constrained.choices[0].message.content
    assert isinstance(json.loads(result["json_object"]), dict), constrained
    result["ws"] = asyncio.run(websocket_answers(port))
    return result


async def websocket_answers(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        for i, prompt in enumerate(PROMPTS[:2]):
            await ws.send(json.dumps({"id": i, "prompt": prompt, "max_tokens": 8, "temperature": 0}))
        texts, ends = {}, {}
        while len(ends) < 2:
            message = json.loads(await ws.recv())
            if message["type"] == "delta":
                texts[message["id"]] = texts.get(message["id"], "") + message["text"]
            else:
                assert message["type"] == "done", message
                ends[message["id"]] = message
    return [texts.get(0, ""), texts.get(1, "")]


async def websocket_node_failure(gateway, nodes_by_address):
    gateway.wait_nodes(lambda n: all(x["in_flight"] == 0 for x in n.values()), what="no request in flight")
    async with websockets.connect(f"ws://127.0.0.1:{gateway.port}/v1/ws") as ws:
        await ws.send(json.dumps({"id": "long", "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True}))
        deltas = 0
        while deltas < 3:
            message = json.loads(await ws.recv())
            assert message["type"] == "delta", message
            deltas += 1
        # The victim is the node with this request in flight, the only one now. Not found by comparing
        # routed_total before and after: /v1/nodes is a snapshot taken every 100 ms, and a stale one taken
        # before the previous request was routed would already show every node idle, so that "before" would
        # miss that request (seen in CI).
        routed = gateway.wait_nodes(lambda n: sum(x["in_flight"] for x in n.values()) == 1,
                                    what="the WebSocket request in flight on one node")
        victim = next(name for name, n in routed.items() if n["in_flight"] == 1)
        nodes_by_address[victim].kill()
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            if message["type"] != "delta":
                break
        assert message["type"] == "error" and message["id"] == "long", message
        assert message["error"]["message"] and message["error"]["type"], message
        # The same socket serves the next request, on the other node.
        await ws.send(json.dumps({"id": "next", "prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            if message["type"] != "delta":
                break
        assert message["type"] == "done" and message["id"] == "next", message
    return next(node for name, node in nodes_by_address.items() if name != victim)


def main():
    inflight = sys.argv[1]
    reference_server = InflightServer(inflight, "--threads", "1")
    try:
        reference = answers(reference_server.port)
    finally:
        reference_server.stop()
    print("single process:", json.dumps(reference))

    with Cluster(inflight) as cluster:
        a = cluster.node(label="node-a")
        b = cluster.node(label="node-b")
        gateway = cluster.gateway("--node", a.address, "--node", b.address, "--cluster-port", str(free_port()))
        assert gateway.cluster_port, "the gateway did not say where nodes join"
        gateway.wait_nodes(all_up(2), what="both nodes up")

        through_gateway = answers(gateway.port)
        print("through the gateway:", json.dumps(through_gateway))
        assert through_gateway == reference, "greedy answers through the gateway differ from the single process"

        status, health = gateway.get("/health")
        assert status == 200 and health["status"] == "ok" and health["nodes_up"] == 2, health
        # /v1/nodes is a snapshot of the last load reports (every 100 ms): wait for the finished requests to show.
        nodes = gateway.wait_nodes(lambda n: all(node["in_flight"] == 0 and node["running"] == 0
                                                 and node["kv_blocks_used"] == 0 for node in n.values()),
                                   what="both nodes idle with no KV block in use")
        for node in nodes.values():
            assert node["routed_total"] > 0 and node["generated_tokens"] > 0, f"a node took no request: {nodes}"
            assert node["kv_blocks_total"] > 0 and node["last_report_ms"] >= 0, nodes

        # A third node joins the running gateway and takes its share of concurrent requests.
        c = cluster.node("--join", f"127.0.0.1:{gateway.cluster_port}", "--name", "node-c", label="node-c")
        nodes = gateway.wait_nodes(lambda n: n.get("node-c", {}).get("state") == "up", what="node-c joined")
        assert nodes["node-c"]["joined"] is True, nodes
        # A second node joining under the same name does not take over node-c's link.
        impostor = cluster.node("--join", f"127.0.0.1:{gateway.cluster_port}", "--name", "node-c", label="impostor")
        impostor.wait_for(r"refused to let this node join: a node of this name is already connected", timeout=20)
        impostor.kill()
        assert gateway.nodes()["node-c"]["state"] == "up", gateway.nodes()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key="unused", max_retries=0)
        before = nodes["node-c"]["routed_total"]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            texts = list(pool.map(lambda i: client.completions.create(
                model=reference["model"], prompt=PROMPTS[0], max_tokens=24, temperature=0).choices[0].text, range(6)))
        assert all(text.startswith(reference[PROMPTS[0]]) for text in texts), texts
        routed = gateway.nodes()["node-c"]["routed_total"] - before
        assert routed >= 1, f"the joined node took none of 6 concurrent requests: {gateway.nodes()}"

        # It leaves on SIGTERM: drained, exit code 0, and the gateway lists it as down.
        assert c.stop() == 0, "the joined node did not drain cleanly"
        gateway.wait_nodes(lambda n: n["node-c"]["state"] == "down", what="node-c listed as down")
        completion = client.completions.create(model=reference["model"], prompt=PROMPTS[1], max_tokens=4, temperature=0)
        assert completion.choices[0].text, completion

        # A WebSocket request whose node is SIGKILLed mid-stream ends with an `error` frame (an OpenAI error
        # object) on a socket that stays usable.
        survivor = asyncio.run(websocket_node_failure(gateway, {a.address: a, b.address: b}))
        assert gateway.stop() == 0 and survivor.stop() == 0
    print("cluster clients: all checks passed")


if __name__ == "__main__":
    main()
