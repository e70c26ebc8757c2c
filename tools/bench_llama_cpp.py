#!/usr/bin/env python3
"""llama.cpp reference benchmark: the same CPU workloads as tools/bench_cpu.cpp.

Measures llama.cpp (through llama-cpp-python's low-level ctypes API) on this
machine so its numbers can be put next to inflight's own C++ benchmark:

  1. prefill          one sequence, a 512-token prompt decoded by a single
                      llama_decode (n_batch = n_ubatch = 512, logits for the
                      last token only); prompt tokens / wall seconds, best of 3
                      runs with the KV cache cleared in between.
  2. decode           a 32-token prompt (not timed), then 128 steps of one
                      token each; 128 / seconds of the decode loop.  The fed
                      tokens are the fixed ids of the formula below (ids 32..159),
                      not the argmax, so no sampling cost is included.
  3. batched B=1,4,16,64
                      B sequences (seq ids 0..B-1), each with its own 32-token
                      prompt (formula offset by 1000*seq), prefilled untimed;
                      then 64 steps, each ONE llama_decode of a batch holding
                      one new token for each of the B sequences at its own next
                      position, logits requested for every token (as a server
                      sampling every sequence would); B*64 / seconds.
  Decode timings sum the llama_decode calls only (batch filling is excluded).
  --repeat N reports the best of N runs of 2. and 3. (useful on a busy box).

Token ids are ids[i] = 100 + (i * 7919 + 13) % 49000, identical to the C++
bench.  Flash attention is off.  Prefill/decode use a single-sequence context;
the batched runs use a context with n_seq_max = 64 and per-sequence (not
unified) KV streams, llama.cpp's recommended setting for independent sequences
(--kv-unified switches to one shared buffer).

Run by hand, or by tools/bench_compare.sh; not by CI.
  /opt/refvenv/bin/python tools/bench_llama_cpp.py --threads 2 --json out.json
"""
import argparse
import ctypes
import json
import os
import sys
import time

import llama_cpp as L
from atomic_write import write_atomically  # tools/atomic_write.py

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
BATCH_SIZES = (1, 4, 16, 64)
PREFILL_TOKENS, PREFILL_REPS = 512, 3
PROMPT_TOKENS, DECODE_STEPS, BATCHED_STEPS = 32, 128, 64


def token_ids(n, offset=0):
    """The shared workload formula; `offset` shifts the index (1000*seq)."""
    return [100 + ((i + offset) * 7919 + 13) % 49000 for i in range(n)]


@L.llama_log_callback
def _quiet_log(level, text, user_data):
    pass


def new_context(model, threads, n_ctx, n_seq_max, kv_unified):
    p = L.llama_context_default_params()
    p.n_ctx, p.n_batch, p.n_ubatch = n_ctx, PREFILL_TOKENS, PREFILL_TOKENS
    p.n_seq_max = n_seq_max
    p.n_threads = p.n_threads_batch = threads
    p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.kv_unified = kv_unified
    ctx = L.llama_init_from_model(model, p)
    if not ctx:
        sys.exit("llama_init_from_model failed")
    return ctx


class Batch:
    """A llama_batch filled entry by entry: (token, pos, seq_id, want_logits)."""

    def __init__(self, capacity):
        self.b = L.llama_batch_init(capacity, 0, 1)

    def fill(self, entries):
        b = self.b
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i] = tok, pos
            b.n_seq_id[i], b.seq_id[i][0] = 1, seq
            b.logits[i] = 1 if logits else 0
        b.n_tokens = len(entries)
        return b

    def free(self):
        L.llama_batch_free(self.b)


def decode(ctx, batch):
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        sys.exit(f"llama_decode returned {rc}")


def timed_decode(ctx, batch):
    t0 = time.perf_counter()
    decode(ctx, batch)
    L.llama_synchronize(ctx)
    return time.perf_counter() - t0


def bench_prefill(ctx, batch):
    ids = token_ids(PREFILL_TOKENS)
    best = float("inf")
    for _ in range(PREFILL_REPS):
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        b = batch.fill([(t, i, 0, i == len(ids) - 1) for i, t in enumerate(ids)])
        best = min(best, timed_decode(ctx, b))
    return PREFILL_TOKENS / best


def bench_decode(ctx, batch):
    ids = token_ids(PROMPT_TOKENS + DECODE_STEPS)
    L.llama_memory_clear(L.llama_get_memory(ctx), True)
    decode(ctx, batch.fill([(t, i, 0, i == PROMPT_TOKENS - 1)
                            for i, t in enumerate(ids[:PROMPT_TOKENS])]))
    elapsed = 0.0
    for pos in range(PROMPT_TOKENS, PROMPT_TOKENS + DECODE_STEPS):
        elapsed += timed_decode(ctx, batch.fill([(ids[pos], pos, 0, True)]))
    return DECODE_STEPS / elapsed


def bench_batched(ctx, batch, n_seqs):
    seqs = [token_ids(PROMPT_TOKENS + BATCHED_STEPS, 1000 * s) for s in range(n_seqs)]
    L.llama_memory_clear(L.llama_get_memory(ctx), True)
    for s, ids in enumerate(seqs):  # untimed prefill, one sequence at a time
        decode(ctx, batch.fill([(t, i, s, i == PROMPT_TOKENS - 1)
                                for i, t in enumerate(ids[:PROMPT_TOKENS])]))
    L.llama_synchronize(ctx)
    elapsed = 0.0
    for step in range(BATCHED_STEPS):
        pos = PROMPT_TOKENS + step
        b = batch.fill([(seqs[s][pos], pos, s, True) for s in range(n_seqs)])
        elapsed += timed_decode(ctx, b)  # batch filling is not timed
    return n_seqs * BATCHED_STEPS / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="best of N runs for decode and batched (default 1, as bench_cpu)")
    ap.add_argument("--kv-unified", action="store_true",
                    help="batched runs share one KV buffer across sequences")
    ap.add_argument("--verbose", action="store_true", help="keep llama.cpp logging")
    args = ap.parse_args()

    if not args.verbose:
        L.llama_log_set(_quiet_log, ctypes.c_void_p())
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(os.path.abspath(args.model).encode(), mp)
    if not model:
        sys.exit(f"cannot load model {args.model}")

    batch = Batch(PREFILL_TOKENS)
    ctx1 = new_context(model, args.threads, 1024, 1, False)
    prefill = bench_prefill(ctx1, batch)
    dec = max(bench_decode(ctx1, batch) for _ in range(args.repeat))
    L.llama_free(ctx1)

    # 128 KV cells per sequence >= 32 prompt + 64 steps.
    ctxb = new_context(model, args.threads, 128 * max(BATCH_SIZES), max(BATCH_SIZES),
                       args.kv_unified)
    n_ctx_b = L.llama_n_ctx(ctxb)
    batched = {str(n): max(bench_batched(ctxb, batch, n) for _ in range(args.repeat))
               for n in BATCH_SIZES}
    L.llama_free(ctxb)
    batch.free()
    L.llama_model_free(model)

    version = f"llama-cpp-python {L.__version__}"
    print(f"engine: llama.cpp ({version}), threads: {args.threads}, "
          f"model: {os.path.basename(args.model)}")
    print(f"batched context: n_ctx {n_ctx_b}, n_seq_max {max(BATCH_SIZES)}, "
          f"kv_unified {args.kv_unified}; best of {args.repeat} for decode/batched")
    print(f"{'workload':<28}{'tokens/s':>12}")
    print(f"{'prefill (512 tok)':<28}{prefill:>12.1f}")
    print(f"{'decode (1 stream, 128 tok)':<28}{dec:>12.1f}")
    for n, v in batched.items():
        print(f"{f'batched decode B={n}':<28}{v:>12.1f}")

    if args.json:
        write_atomically(args.json, json.dumps({"engine": "llama.cpp", "version": version, "threads": args.threads,
                                                "prefill_tokens_per_s": prefill, "decode_tokens_per_s": dec,
                                                "batched": batched}, indent=2) + "\n")


if __name__ == "__main__":
    main()
