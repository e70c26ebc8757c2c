"""Checks of tools/bench_hf_static.py, the Hugging Face static-batching baseline. Not part of ctest or CI:
its second half needs torch and transformers, which only the GPU benchmark machine has.

Usage: python3 tests/e2e/hf_baseline_test.py

1. Without torch: the pure-Python mt19937_64 gives std::mt19937_64's published 10000th output, and the
   workload it draws is the one bench_batching measured in docs/results/2026-11-24-cpu/seed.json (its
   generated_tokens and static_ideal_steps at every max_tokens); the model-shape files parse.
2. With torch and transformers (skipped otherwise): an end-to-end CPU run on the tiny shape, whose JSON must
   count the same tokens and steps as the workload.
Any failed check raises, so the process exits non-zero.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_hf_static as hf  # noqa: E402


def check_generator():
    rng = hf.MT19937_64(5489)  # the C++ standard's check: the 10000th output of a default-seeded mt19937_64
    for _ in range(9999):
        rng()
    assert rng() == 9981545732273789042

    with open(os.path.join(ROOT, "docs/results/2026-11-24-cpu/seed.json")) as f:
        measured = json.load(f)
    _, uncapped = hf.make_workload(measured["seed"], measured["requests"], measured["prompt_len"],
                                   measured["mean_tokens"])
    for point in measured["points"]:
        lengths = hf.capped(uncapped, point["max_tokens"])
        assert sum(lengths) == point["generated_tokens"], point["max_tokens"]
        assert hf.ideal_static_steps(lengths, measured["max_batch"]) == point["static_ideal_steps"]


def check_configs():
    for name, expect in (("llama-3.1-8b.json", (4096, 14336, 32, 32, 8, 128256, False)),
                         ("smollm2-135m.json", (576, 1536, 30, 9, 3, 49152, True))):
        with open(os.path.join(ROOT, "config", name)) as f:
            config = json.load(f)
        shape = tuple(config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "num_key_value_heads", "vocab_size",
                                          "tie_word_embeddings"))
        assert shape == expect, (name, shape)


def check_cpu_run():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        print("hf_baseline_test: torch/transformers not installed: CPU run skipped")
        return False
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "hf.json")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools/bench_hf_static.py"), "--device", "cpu", "--tiny",
                        "--requests", "6", "--batch-size", "4", "--mean-tokens", "6", "--max-tokens", "2,8",
                        "--warmup-tokens", "2", "--json", out], check=True)
        with open(out) as f:
            result = json.load(f)
    _, uncapped = hf.make_workload(7, 6, 32, 6)
    assert result["series"] == "hf_static" and result["workload"]["uncapped_lengths"] == uncapped
    for point in result["points"]:
        lengths = hf.capped(uncapped, point["max_tokens"])
        run = point["hf_static"]
        assert point["generated_tokens"] == sum(lengths)
        assert run["steps"] == hf.ideal_static_steps(lengths, 4) == point["static_ideal_steps"]
        assert run["tokens_per_s"] > 0 and run["ttft_ms_p50"] > 0 and len(run["batches"]) == 2
    return True


def main():
    check_generator()
    check_configs()
    ran = check_cpu_run()
    print(f"hf_baseline_test: {3 if ran else 2} passed, 0 failed")


if __name__ == "__main__":
    main()
