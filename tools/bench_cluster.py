#!/usr/bin/env python3
"""Cluster benchmarks: each comparison measured side by side in one run, rounds interleaved (A B A B ...),
fresh processes per round (empty prefix caches), every process on loopback and reaped at the end.

    build/e2e-venv/bin/python tools/bench_cluster.py [--rounds 2] [--json out.json] [--only overhead,scale,affinity]

overhead  `inflight serve --threads 1` against a gateway to one node with --threads 1: output tokens/s
          ratio (gateway / direct) and TTFT p50 difference.
scale     a gateway to one node against a gateway to two nodes (--threads 1 each): aggregate output
          tokens/s ratio (2 / 1), TTFT and ITL p50/p99.
affinity  a gateway to two nodes with a small KV cache (--kv-cache-mb), prompts from 16 shared 512-token
          prefixes, --prefix-affinity against --no-prefix-affinity: the nodes' prefix-cache hit rate and TTFT.
The load is tools/bench_serving.py's (streamed completions, random token ids, ignore_eos). Timings are
CPU timings of this machine: compare ratios, not absolute numbers.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_serving  # noqa: E402
from cluster import Cluster, Gateway, all_up  # noqa: E402
from inflight_server import InflightServer  # noqa: E402
from atomic_write import write_atomically  # tools/atomic_write.py

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
INFLIGHT = os.path.join(ROOT, "build", "bin", "inflight")


def load(port, **overrides):
    args = dict(base_url=f"http://127.0.0.1:{port}", num_requests=48, max_concurrency=8,
                request_rate=float("inf"), prompt_len=32, output_mean=64, output_max=256, seed=7,
                prefix_groups=0, shared_prefix_len=0)
    args.update(overrides)
    summary = asyncio.run(bench_serving.run(types.SimpleNamespace(**args)))
    assert summary["failed"] == 0 and summary["wrong_lengths"] == 0, summary
    return summary


def direct(workload):
    server = InflightServer(INFLIGHT, "--threads", "1")
    try:
        return load(server.port, **workload)
    finally:
        server.stop()


def through_gateway(node_count, workload, node_args=(), gateway_args=()):
    with Cluster(INFLIGHT) as cluster:
        nodes = [cluster.node(*node_args, label=f"node-{i}") for i in range(node_count)]
        gateway = cluster.gateway(*[a for n in nodes for a in ("--node", n.address)], *gateway_args)
        gateway.wait_nodes(all_up(node_count), what="nodes up")
        summary = load(gateway.port, **workload)
        time.sleep(0.3)  # the nodes' last load reports (prefix-cache counters) arrive every 100 ms
        nodes_view = gateway.nodes()
        summary["nodes"] = nodes_view
        gateway.stop()
        for node in nodes:
            node.stop()
        return summary


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def row(name, runs):
    return (f"| {name} | {median(runs, 'output_tokens_per_s'):.1f} | "
            f"{median(runs, 'ttft_ms_p50'):.1f} / {median(runs, 'ttft_ms_p99'):.1f} | "
            f"{median(runs, 'itl_ms_p50'):.1f} / {median(runs, 'itl_ms_p99'):.1f} |")


HEADER = "| setup | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms |\n|---|---|---|---|"


def overhead(rounds, report):
    workload = dict(num_requests=32, max_concurrency=4, output_mean=64)
    a, b = [], []
    for _ in range(rounds):
        a.append(direct(workload))
        b.append(through_gateway(1, workload))
    ratios = [y["output_tokens_per_s"] / x["output_tokens_per_s"] for x, y in zip(a, b)]
    added = [y["ttft_ms_p50"] - x["ttft_ms_p50"] for x, y in zip(a, b)]
    print(f"\noverhead ({rounds} rounds, {workload}):\n{HEADER}\n{row('serve direct', a)}\n{row('gateway + 1 node', b)}")
    print(f"tokens/s gateway / direct per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"TTFT p50 added per round (ms): {', '.join(f'{d:.1f}' for d in added)}")
    report["overhead"] = {"direct": a, "gateway": b, "ratios": ratios, "ttft_p50_added_ms": added}


def scale(rounds, report):
    workload = dict(num_requests=64, max_concurrency=16, output_mean=64)
    one, two = [], []
    for _ in range(rounds):
        one.append(through_gateway(1, workload))
        two.append(through_gateway(2, workload))
    ratios = [y["output_tokens_per_s"] / x["output_tokens_per_s"] for x, y in zip(one, two)]
    print(f"\nscale ({rounds} rounds, {workload}):\n{HEADER}\n{row('gateway + 1 node', one)}\n{row('gateway + 2 nodes', two)}")
    print(f"tokens/s 2 nodes / 1 node per round: {', '.join(f'{r:.3f}' for r in ratios)}")
    report["scale"] = {"one": one, "two": two, "ratios": ratios}


def hit_rate(summary):
    return [round(n["prefix_cache_hit_rate"], 3) for n in summary["nodes"].values()]


def affinity(rounds, report):
    workload = dict(num_requests=96, max_concurrency=8, output_mean=16, output_max=64, prompt_len=16,
                    prefix_groups=16, shared_prefix_len=512, seed=11)
    node_args = ("--kv-cache-mb", "160")
    on, off = [], []
    for _ in range(rounds):
        on.append(through_gateway(2, workload, node_args, ("--prefix-affinity",)))
        off.append(through_gateway(2, workload, node_args, ("--no-prefix-affinity",)))
    print(f"\naffinity ({rounds} rounds, {workload}, nodes {' '.join(node_args)}):\n{HEADER}\n"
          f"{row('affinity on', on)}\n{row('affinity off', off)}")
    for name, runs in (("on", on), ("off", off)):
        print(f"prefix-cache hit rate per node, affinity {name}: {[hit_rate(r) for r in runs]}; "
              f"affinity-routed: {[sum(n['affinity_routed'] for n in r['nodes'].values()) for r in runs]}")
    report["affinity"] = {"on": on, "off": off}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="overhead,scale,affinity")
    parser.add_argument("--json")
    args = parser.parse_args()
    report = {}
    for name in args.only.split(","):
        {"overhead": overhead, "scale": scale, "affinity": affinity}[name](args.rounds, report)
    if args.json:
        write_atomically(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
