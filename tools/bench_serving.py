#!/usr/bin/env python3
"""Load generator for `inflight serve` (or any OpenAI-compatible server), after vLLM's benchmark_serving.

    python tools/bench_serving.py --base-url http://127.0.0.1:8000 --num-requests 64 --max-concurrency 8 \
        [--request-rate inf] [--prompt-len 32] [--output-mean 128] [--output-max 512] [--json out.json]
        [--prefix-groups G --shared-prefix-len L]

Each request is a streamed /v1/completions call with `prompt_len` random token ids, ignore_eos, and
max_tokens drawn from an exponential distribution (mean --output-mean, capped at --output-max, at least 1).
With --prefix-groups G, each prompt starts with one of G shared prefixes of --shared-prefix-len random ids
(chosen at random per request): a workload for prefix caching and a gateway's prefix affinity.
Arrivals are Poisson at --request-rate requests/s (inf: all at once), limited to --max-concurrency in flight.
Metrics, as benchmark_serving defines them:
    TTFT  request sent -> first streamed token
    TPOT  (latency - TTFT) / (output tokens - 1), per request
    ITL   time between consecutive streamed tokens, over all requests
Needs httpx (the test virtualenv build/e2e-venv has it: build/e2e-venv/bin/python tools/bench_serving.py ...).
"""
import argparse
import asyncio
import json
import math
import random
import time

import httpx
from atomic_write import write_atomically  # tools/atomic_write.py


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    low, high = math.floor(k), math.ceil(k)
    return values[low] + (values[high] - values[low]) * (k - low)


async def one_request(client, url, prompt, max_tokens, results):
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    token_times, output_tokens = [], 0
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            results.append({"ok": False, "status": response.status_code})
            return
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                output_tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                token_times.append(time.perf_counter())
    done = time.perf_counter()
    results.append({"ok": True, "sent": sent, "done": done, "token_times": token_times,
                    "output_tokens": output_tokens, "max_tokens": max_tokens})


async def run(args):
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(1000, 20000) for _ in range(args.prompt_len)] for _ in range(args.num_requests)]
    if getattr(args, "prefix_groups", 0):
        prefixes = [[rng.randrange(1000, 20000) for _ in range(args.shared_prefix_len)] for _ in range(args.prefix_groups)]
        prompts = [rng.choice(prefixes) + prompt for prompt in prompts]
    lengths = [max(1, min(args.output_max, math.ceil(rng.expovariate(1.0 / args.output_mean))))
               for _ in range(args.num_requests)]
    url = args.base_url.rstrip("/") + "/v1/completions"
    results = []
    limit = asyncio.Semaphore(args.max_concurrency)
    timeout = httpx.Timeout(600.0)
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=args.max_concurrency)) as client:
        async def limited(prompt, max_tokens):
            async with limit:
                await one_request(client, url, prompt, max_tokens, results)

        start = time.perf_counter()
        tasks = []
        for prompt, max_tokens in zip(prompts, lengths):
            tasks.append(asyncio.create_task(limited(prompt, max_tokens)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(args.request_rate))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start

    ok = [r for r in results if r["ok"]]
    ttft = [(r["token_times"][0] - r["sent"]) * 1e3 for r in ok if r["token_times"]]
    tpot = [((r["done"] - r["sent"]) - (r["token_times"][0] - r["sent"])) / (r["output_tokens"] - 1) * 1e3
            for r in ok if r["token_times"] and r["output_tokens"] > 1]
    itl = [(b - a) * 1e3 for r in ok for a, b in zip(r["token_times"], r["token_times"][1:])]
    output_tokens = sum(r["output_tokens"] for r in ok)
    summary = {
        "base_url": args.base_url, "num_requests": args.num_requests, "max_concurrency": args.max_concurrency,
        "request_rate": None if args.request_rate == float("inf") else args.request_rate,
        "prompt_len": args.prompt_len, "output_mean": args.output_mean, "output_max": args.output_max,
        "completed": len(ok), "failed": len(results) - len(ok), "duration_s": duration,
        "request_throughput": len(ok) / duration, "output_tokens_per_s": output_tokens / duration,
        "output_tokens": output_tokens,
        "wrong_lengths": sum(1 for r in ok if r["output_tokens"] != r["max_tokens"]),
    }
    for name, values in (("ttft_ms", ttft), ("tpot_ms", tpot), ("itl_ms", itl)):
        for p in (50, 90, 99):
            summary[f"{name}_p{p}"] = percentile(values, p)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--request-rate", type=float, default=float("inf"))
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--output-mean", type=float, default=128)
    parser.add_argument("--output-max", type=int, default=512)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix-groups", type=int, default=0)
    parser.add_argument("--shared-prefix-len", type=int, default=256)
    parser.add_argument("--json")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    print(f"{summary['completed']} requests ({summary['failed']} failed, {summary['wrong_lengths']} wrong lengths), "
          f"concurrency {args.max_concurrency}, {summary['duration_s']:.1f} s")
    print(f"| req/s | output tok/s | TTFT p50/p90/p99 ms | TPOT p50/p90/p99 ms | ITL p50/p90/p99 ms |")
    print(f"| {summary['request_throughput']:.2f} | {summary['output_tokens_per_s']:.1f} | "
          + " | ".join("/".join(f"{summary[f'{n}_p{p}']:.1f}" for p in (50, 90, 99)) for n in ("ttft_ms", "tpot_ms", "itl_ms"))
          + " |")
    if args.json:
        write_atomically(args.json, json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
