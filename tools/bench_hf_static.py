#!/usr/bin/env python3
"""Static-batching baseline with Hugging Face transformers, for the seed experiment of bench_batching.

Runs the workload of `bench_batching seed` (N requests of --prompt-len random token ids, greedy, EOS
ignored, output lengths exponential with mean --mean-tokens, capped at each max_tokens) the way an HF
pipeline batches: the requests in submission order, --batch-size at a time, each batch one
`model.generate(max_new_tokens = min_new_tokens = its longest member's length, do_sample=False)`, so the
whole batch decodes until its longest member is done. Useful tokens are each request's own length; the rest
of what the batch computes is padding work, counted as in bench_batching's static mode.

The model is LlamaForCausalLM built from a plain HF config.json (config/smollm2-135m.json, the default, or
config/llama-3.1-8b.json) with random weights: nothing is downloaded. Speed does not depend on the values.

    # GPU machine (torch + transformers installed), bf16:
    python3 tools/bench_hf_static.py --config-json config/llama-3.1-8b.json --json hf-8b.json
    # the same workload as a bench_batching run, checked against its JSON:
    python3 tools/bench_hf_static.py --lengths-from seed.json --json hf.json
    # CPU smoke run (fp32):
    python3 tools/bench_hf_static.py --device cpu --tiny --requests 4 --max-tokens 8,16

Workload: bench_batching draws from its own inverse-CDF on std::mt19937_64 (not std::exponential_distribution),
so this script reproduces its prompts and lengths exactly with a pure-Python mt19937_64 (no numpy): same
--seed, --requests, --prompt-len and --mean-tokens give the same workload. --lengths-from takes either a
bench_batching seed JSON (its seed and sizes are used, and its generated_tokens and static_ideal_steps are
checked against ours per max_tokens), this script's own JSON, or a JSON list of uncapped output lengths. The
output JSON says which source was used.

Timing: all requests count as submitted at time 0 (bench_batching's run_all_at_once). Wall time runs from
before the first batch to after the last, with torch.cuda.synchronize() at both ends. TTFT and TPOT come
from a StoppingCriteria that generate() calls once per decoding step, right after each new token; it
synchronizes the device and takes the time (generate itself synchronizes every step to test whether all
sequences are done, so this adds next to nothing; --no-step-timing turns it off). A request's TTFT is the
time of its batch's first step (prefill + first token), counted from time 0 (so it includes earlier
batches); its TPOT is (time of the step that produced its own last token - time of its first) / (length - 1)
(bench_batching's definition), for requests of length >= 2. An HF pipeline without a streamer returns
results only when the whole batch ends; that is e2e_ms. prefill_probe_ms is a separate cross-check, outside
the timed run: one generate(max_new_tokens=1) per batch.
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from atomic_write import write_atomically  # tools/atomic_write.py

MIN_PROMPT_TOKEN, MAX_PROMPT_TOKEN = 1000, 19999  # bench_batching's range: ordinary text pieces, no specials
DEFAULT_MAX_TOKENS = "32,64,128,256,512,1024,1536"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "config", "smollm2-135m.json")

# A model small enough for a CPU smoke run. Its vocabulary covers bench_batching's prompt ids (< 20000), so
# even the tiny run uses the exact prompts.
TINY_CONFIG = {
    "_comment": "tiny shape for smoke tests (--tiny)",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 20000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


# ---- workload: bench_batching's draws, bit for bit ------------------------------------------------------

class MT19937_64:
    """std::mt19937_64 (the 64-bit Mersenne Twister with its standard parameters)."""

    N, M = 312, 156
    MASK = (1 << 64) - 1
    MATRIX_A = 0xB5026F5AA96619E9
    UPPER, LOWER = 0xFFFFFFFF80000000, 0x7FFFFFFF

    def __init__(self, seed):
        mt = [seed & self.MASK]
        for i in range(1, self.N):
            prev = mt[-1]
            mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.mt, self.index = mt, self.N

    def _twist(self):
        mt, n, m = self.mt, self.N, self.M
        for i in range(n):
            y = (mt[i] & self.UPPER) | (mt[(i + 1) % n] & self.LOWER)
            mt[i] = mt[(i + m) % n] ^ (y >> 1) ^ (self.MATRIX_A if y & 1 else 0)
        self.index = 0

    def __call__(self):
        if self.index >= self.N:
            self._twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK


def uniform01(rng):
    return (rng() >> 11) * 2.0**-53  # top 53 bits, exactly as bench_batching


def exponential(rng, mean):
    return -mean * math.log1p(-uniform01(rng))


def draw_prompts(rng, count, length):
    span = MAX_PROMPT_TOKEN - MIN_PROMPT_TOKEN + 1
    return [[MIN_PROMPT_TOKEN + rng() % span for _ in range(length)] for _ in range(count)]


def draw_lengths(rng, count, mean):
    return [int(min(max(math.ceil(exponential(rng, mean)), 1.0), 1e9)) for _ in range(count)]


def make_workload(seed, requests, prompt_len, mean_tokens):
    """bench_batching seed: prompts first, then one uncapped length per request, from one generator."""
    rng = MT19937_64(seed)
    prompts = draw_prompts(rng, requests, prompt_len)
    return prompts, draw_lengths(rng, requests, mean_tokens)


def capped(lengths, cap):
    return [min(length, cap) for length in lengths]


def ideal_static_steps(lengths, batch):
    return sum(max(lengths[b:b + batch]) for b in range(0, len(lengths), batch))


def load_workload(args):
    """The workload and a description of where it came from; may override the sizes in args."""
    if not args.lengths_from:
        prompts, uncapped = make_workload(args.seed, args.requests, args.prompt_len, args.mean_tokens)
        return prompts, uncapped, {"source": "generated", "generator": "mt19937_64 inverse-CDF, as bench_batching seed"}

    with open(args.lengths_from) as f:
        data = json.load(f)
    origin = {"source": "lengths-from", "path": args.lengths_from}
    if isinstance(data, list):  # uncapped lengths only; prompts from the seed
        uncapped = [int(x) for x in data]
        args.requests = len(uncapped)
        prompts, _ = make_workload(args.seed, args.requests, args.prompt_len, args.mean_tokens)
        origin["kind"] = "list of uncapped lengths; prompts generated from --seed"
        return prompts, uncapped, origin
    if not isinstance(data, dict):
        raise SystemExit(f"--lengths-from: {args.lengths_from}: expected a JSON list or object")

    for key in ("requests", "prompt_len", "mean_tokens", "seed"):
        if key in data:
            setattr(args, key, data[key])
    if "max_batch" in data and not args.batch_size_given:
        args.batch_size = int(data["max_batch"])
    if not args.max_tokens_given and data.get("points"):
        args.max_tokens = sorted({int(p["max_tokens"]) for p in data["points"]})

    workload = data.get("workload", {}) if isinstance(data.get("workload"), dict) else {}
    stored = data.get("uncapped_lengths", workload.get("uncapped_lengths"))
    prompts, uncapped = make_workload(int(args.seed), int(args.requests), int(args.prompt_len), float(args.mean_tokens))
    if stored is not None:
        stored = [int(x) for x in stored]
        origin["kind"] = "stored uncapped_lengths"
        origin["matches_generator"] = stored == uncapped
        uncapped = stored
        args.requests = len(uncapped)
        if len(prompts) != len(uncapped):
            prompts, _ = make_workload(int(args.seed), len(uncapped), int(args.prompt_len), float(args.mean_tokens))
    else:
        origin["kind"] = "regenerated from its seed, requests, prompt_len and mean_tokens"

    # A bench_batching seed JSON records, per max_tokens, the sum of the capped lengths and the static steps.
    checked = []
    for point in data.get("points", []):
        cap = int(point["max_tokens"])
        lengths = capped(uncapped, cap)
        if "generated_tokens" in point and int(point["generated_tokens"]) != sum(lengths):
            raise SystemExit(f"--lengths-from: max_tokens {cap}: file has generated_tokens {point['generated_tokens']}, "
                             f"this workload {sum(lengths)}: not the same workload")
        if "static_ideal_steps" in point and int(data.get("max_batch", -1)) == args.batch_size:
            if int(point["static_ideal_steps"]) != ideal_static_steps(lengths, args.batch_size):
                raise SystemExit(f"--lengths-from: max_tokens {cap}: static_ideal_steps differ: not the same workload")
        checked.append(cap)
    if checked:
        origin["checked_max_tokens"] = checked
    return prompts, uncapped, origin


# ---- model ------------------------------------------------------------------------------------------------

def version_tuple(text):
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def config_fields(raw, transformers_version, notes):
    """The HF config fields of a config.json, adapted to the installed transformers."""
    fields = {k: v for k, v in raw.items() if not k.startswith("_")}
    for key in ("torch_dtype", "dtype", "transformers_version", "architectures"):  # --dtype decides; not fields
        fields.pop(key, None)
    rope = fields.get("rope_scaling")
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type == "llama3" and version_tuple(transformers_version) < (4, 43):
        # transformers < 4.43 rejects llama3 rope scaling. It changes the rotary frequencies, not the cost.
        fields.pop("rope_scaling")
        notes.append("rope_scaling llama3 dropped: transformers < 4.43 does not know it (same cost)")
    return fields


def build_model(args, torch, transformers, notes):
    if args.tiny:
        raw, config_name = dict(TINY_CONFIG), "tiny"
    else:
        with open(args.config_json) as f:
            raw = json.load(f)
        config_name = args.config_json
    fields = config_fields(raw, transformers.__version__, notes)
    config = transformers.LlamaConfig(**fields, attn_implementation=args.attn_implementation)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init directly in the target dtype and on the device: no fp32 copy
    try:
        with torch.device(args.device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    # As from_pretrained(torch_dtype=...) leaves it: parameters in dtype; fp32 buffers (rotary inv_freq) kept.
    wrong = {str(p.dtype) for p in model.parameters() if p.dtype != dtype}
    if wrong:
        raise RuntimeError(f"parameters built as {wrong}, not {dtype}")
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, config, fields, config_name, dtype, parameters, weight_bytes


# ---- measurement ------------------------------------------------------------------------------------------

def make_step_timer(torch, transformers, device):
    class StepTimer(transformers.StoppingCriteria):
        """Never stops generation; records the time right after each generated token."""

        def __init__(self):
            self.times = []
            self.not_done = None

        def __call__(self, input_ids, scores, **kwargs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            if self.not_done is None or self.not_done.shape[0] != input_ids.shape[0]:
                self.not_done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            return self.not_done

    return StepTimer()


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    rank = p / 100.0 * (len(values) - 1)  # linear interpolation, as bench_batching
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (rank - low) * (values[high] - values[low])


class Runner:
    def __init__(self, args, torch, transformers, model, pad_token_id):
        self.args, self.torch, self.transformers, self.model = args, torch, transformers, model
        self.pad_token_id = pad_token_id

    def sync(self):
        if self.args.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def generate(self, prompts, new_tokens, timer=None):
        torch = self.torch
        input_ids = torch.tensor(prompts, dtype=torch.long, device=self.args.device)
        kwargs = dict(
            input_ids=input_ids,
            # Every prompt has the same length: no padding, all ones.
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # EOS ignored: the batch always runs its full length
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )
        if timer is not None:
            kwargs["stopping_criteria"] = self.transformers.StoppingCriteriaList([timer])
        with torch.inference_mode():
            out = self.model.generate(**kwargs)
        if tuple(out.shape) != (len(prompts), len(prompts[0]) + new_tokens):
            raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected "
                               f"{(len(prompts), len(prompts[0]) + new_tokens)}: a sequence stopped early")
        return out

    def warm_up(self, prompts):
        batch = prompts[:self.args.batch_size]
        self.generate(batch, max(2, self.args.warmup_tokens), make_step_timer(self.torch, self.transformers,
                                                                              self.args.device))
        self.generate(batch, 1)
        self.sync()

    def prefill_probe(self, prompts):
        """Seconds of one generate(max_new_tokens=1) per batch (prefill + first token), outside the run."""
        probes = []
        for begin in range(0, len(prompts), self.args.batch_size):
            self.sync()
            start = time.perf_counter()
            self.generate(prompts[begin:begin + self.args.batch_size], 1)
            self.sync()
            probes.append(time.perf_counter() - start)
        return probes

    def run(self, prompts, lengths):
        """Every batch in order; all requests submitted at time 0."""
        args = self.args
        batches = []
        ttft, tpot, e2e = [], [], []
        self.sync()
        start = time.perf_counter()
        for begin in range(0, len(prompts), args.batch_size):
            members = lengths[begin:begin + args.batch_size]
            steps = max(members)
            timer = None if args.no_step_timing else make_step_timer(self.torch, self.transformers, args.device)
            batch_start = time.perf_counter()
            self.generate(prompts[begin:begin + args.batch_size], steps, timer)
            self.sync()
            batch_end = time.perf_counter()
            e2e += [(batch_end - start) * 1e3] * len(members)
            record = {"requests": len(members), "steps": steps, "useful_tokens": sum(members),
                      "wall_s": batch_end - batch_start}
            if timer is not None:
                if len(timer.times) != steps:
                    raise RuntimeError(f"step timer saw {len(timer.times)} steps, expected {steps}")
                first = timer.times[0]
                record["first_token_s"] = first - batch_start
                record["decode_step_ms"] = ((timer.times[-1] - first) / (steps - 1) * 1e3) if steps > 1 else 0.0
                for length in members:
                    ttft.append((first - start) * 1e3)
                    if length >= 2:
                        tpot.append((timer.times[length - 1] - first) / (length - 1) * 1e3)
            batches.append(record)
        wall = time.perf_counter() - start
        return wall, batches, ttft, tpot, e2e


# ---- output -----------------------------------------------------------------------------------------------

def device_name(torch, device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def kv_bytes_per_token(fields, element_bytes):
    heads = fields.get("num_attention_heads", 32)
    head_dim = fields.get("head_dim") or fields["hidden_size"] // heads
    kv_heads = fields.get("num_key_value_heads") or heads
    return 2 * kv_heads * head_dim * element_bytes * fields["num_hidden_layers"]


def parse_caps(text):
    caps = []
    for piece in text.split(","):
        try:
            value = int(piece)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"'{piece}' is not a positive integer")
        caps.append(value)
    return caps


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-json", "--config", default=DEFAULT_CONFIG,
                        help="HF config.json of the model shape (default: config/smollm2-135m.json)")
    parser.add_argument("--tiny", action="store_true", help="a tiny built-in shape, for smoke tests on CPU")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"],
                        help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--attn-implementation", default="sdpa", help="sdpa (default), eager, flash_attention_2")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--mean-tokens", type=float, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, help="requests per generate() call (default 64, "
                        "bench_batching's --max-batch; from --lengths-from's max_batch when given)")
    parser.add_argument("--max-tokens", type=parse_caps, help=f"caps to sweep (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--lengths-from", help="take the workload from a bench_batching seed JSON (checked), "
                        "this script's JSON, or a JSON list of uncapped lengths")
    parser.add_argument("--warmup-tokens", type=int, default=16, help="new tokens of the warm-up batch (default 16)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; the one of median wall time is kept")
    parser.add_argument("--no-step-timing", action="store_true", help="no per-step timestamps (no TTFT/TPOT)")
    parser.add_argument("--no-prefill-probe", action="store_true", help="skip the max_new_tokens=1 cross-check")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    args.batch_size_given = args.batch_size is not None
    args.max_tokens_given = args.max_tokens is not None
    if args.batch_size is None:
        args.batch_size = 64
    if args.max_tokens is None:
        args.max_tokens = parse_caps(DEFAULT_MAX_TOKENS)
    if args.dtype is None:
        args.dtype = "fp32" if args.device == "cpu" else "bf16"
    if args.batch_size < 1 or args.requests < 1 or args.prompt_len < 1 or not args.mean_tokens > 0 or args.repeats < 1:
        parser.error("--batch-size, --requests, --prompt-len, --mean-tokens and --repeats must be positive")

    prompts, uncapped, origin = load_workload(args)
    args.max_tokens = sorted(set(args.max_tokens))

    import torch  # noqa: E402  (after argument errors, which need no torch)
    import transformers  # noqa: E402

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_hf_static.py: --device cuda, but torch sees no CUDA device (use --device cpu)")
    transformers.logging.set_verbosity_error()  # generate's advisory warnings would interleave with the table
    torch.manual_seed(args.seed)

    notes = []
    model, config, fields, config_name, dtype, parameters, weight_bytes = build_model(args, torch, transformers, notes)
    vocab = fields["vocab_size"]
    if MAX_PROMPT_TOKEN >= vocab:
        prompts = [[token % vocab for token in prompt] for prompt in prompts]
        origin["prompt_ids_folded"] = f"token ids taken modulo vocab_size {vocab} (< {MAX_PROMPT_TOKEN + 1})"
    eos = fields.get("eos_token_id")
    pad_token_id = fields.get("pad_token_id")
    if pad_token_id is None:
        pad_token_id = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0

    runner = Runner(args, torch, transformers, model, pad_token_id)
    max_context = args.prompt_len + max(capped(uncapped, max(args.max_tokens)))
    if max_context > fields.get("max_position_embeddings", 1 << 30):
        raise SystemExit(f"prompt + longest output = {max_context} tokens, over max_position_embeddings")

    name = device_name(torch, args.device)
    print(f"hf_static: {len(prompts)} requests, prompt {args.prompt_len} tokens, mean output {args.mean_tokens:g} "
          f"tokens, batch size {args.batch_size}, seed {args.seed}, workload {origin['source']}")
    print(f"model {config_name}: {parameters / 1e6:.1f} M parameters, {args.dtype}, {args.attn_implementation}, "
          f"on {args.device} ({name}); torch {torch.__version__}, transformers {transformers.__version__}")
    for note in notes:
        print(f"note: {note}")

    warm_start = time.perf_counter()
    runner.warm_up(prompts)
    print(f"warm-up: {time.perf_counter() - warm_start:.2f} s\n")

    print("| max_tokens | generated | steps | padding | HF static tok/s | wall s | TTFT p50 ms | TTFT p99 ms "
          "| TPOT p50 ms | TPOT p99 ms | prefill probe ms |\n"
          "|-----------:|----------:|------:|--------:|----------------:|-------:|------------:|------------:"
          "|------------:|------------:|-----------------:|")
    points = []
    for cap in args.max_tokens:
        lengths = capped(uncapped, cap)
        generated = sum(lengths)
        runs = [runner.run(prompts, lengths) for _ in range(args.repeats)]
        walls = [r[0] for r in runs]
        wall, batches, ttft, tpot, e2e = sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]
        steps = sum(b["steps"] for b in batches)
        computed = sum(b["steps"] * b["requests"] for b in batches)
        probes = [] if args.no_prefill_probe else runner.prefill_probe(prompts)
        stats = {
            "tokens_per_s": generated / wall,
            "wall_s": wall,
            "wall_s_all": walls,
            "steps": steps,
            "computed_tokens": computed,
            "padding_share": 1.0 - generated / computed,
            "computed_tokens_per_s": computed / wall,
            "batches": batches,
            "e2e_ms_p50": percentile(e2e, 50),
            "e2e_ms_p99": percentile(e2e, 99),
        }
        if ttft:
            stats.update({"ttft_ms_p50": percentile(ttft, 50), "ttft_ms_p99": percentile(ttft, 99),
                          "ttft_ms_mean": statistics.fmean(ttft)})
        if tpot:
            stats.update({"tpot_ms_p50": percentile(tpot, 50), "tpot_ms_p99": percentile(tpot, 99),
                          "tpot_ms_mean": statistics.fmean(tpot)})
        if probes:
            stats["prefill_probe_ms"] = statistics.fmean(probes) * 1e3
        points.append({"max_tokens": cap, "generated_tokens": generated,
                       "static_ideal_steps": ideal_static_steps(lengths, args.batch_size), "hf_static": stats})

        def cell(key, width, fmt="{:.1f}"):
            return (fmt.format(stats[key]) if key in stats else "-").rjust(width)

        print(f"| {cap:10d} | {generated:9d} | {steps:5d} | {100 * stats['padding_share']:6.1f}% | "
              f"{stats['tokens_per_s']:15.1f} | {wall:6.2f} | {cell('ttft_ms_p50', 11)} | {cell('ttft_ms_p99', 11)} | "
              f"{cell('tpot_ms_p50', 11, '{:.2f}')} | {cell('tpot_ms_p99', 11, '{:.2f}')} | "
              f"{cell('prefill_probe_ms', 16)} |", flush=True)

    print("\ngenerated: useful tokens (each request's own length); padding: share of the batches' computed tokens "
          "past a request's length;\nTTFT: time 0 (all submitted) to its batch's first token; TPOT: (own last - "
          "first token time) / (length - 1);\nprefill probe: one generate(max_new_tokens=1) per batch, outside the "
          "timed run, mean per batch")

    element_bytes = torch.tensor([], dtype=dtype).element_size()
    result = {
        "experiment": "hf_static_seed",
        "series": "hf_static",
        "tool": "tools/bench_hf_static.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_config": config_name,
        "config": {k: v for k, v in fields.items()},
        "parameters": parameters,
        "weight_bytes": weight_bytes,
        "kv_bytes_per_token": kv_bytes_per_token(fields, element_bytes),
        "weights": "random (no checkpoint): throughput only",
        "device": args.device,
        "device_name": name,
        "dtype": str(dtype).replace("torch.", ""),
        "attn_implementation": getattr(config, "_attn_implementation", args.attn_implementation),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "cuda_version": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "notes": notes,
        "requests": len(prompts),
        "prompt_len": args.prompt_len,
        "mean_tokens": args.mean_tokens,
        "seed": args.seed,
        "max_batch": args.batch_size,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "step_timing": not args.no_step_timing,
        "workload": dict(origin, uncapped_lengths=uncapped),
        "timing": {
            "wall_s": "first batch start to last batch end, torch.cuda.synchronize() at both ends; all requests "
                      "submitted at time 0",
            "tokens_per_s": "generated_tokens (sum of each request's own capped length) / wall_s",
            "ttft": "time 0 to the first token of the request's batch, from a per-step StoppingCriteria that "
                    "synchronizes and timestamps",
            "tpot": "(time of the step giving the request's last token - its first token) / (length - 1), "
                    "requests of length >= 2",
            "e2e": "time 0 to the end of the request's batch (when a pipeline without a streamer returns it)",
            "prefill_probe_ms": "mean over batches of one generate(max_new_tokens=1), outside the timed run",
        },
        "points": points,
    }
    if args.json:
        write_atomically(args.json, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
