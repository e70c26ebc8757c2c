#!/usr/bin/env python3
"""Plot the seed experiment of bench_batching: generated tokens/s of static and continuous batching
against the max_tokens cap (log2 axis), and their ratio in a second panel.

    build/bin/bench_batching seed --json results.json
    python3 tools/plot_batching.py results.json out.png

Needs matplotlib (apt-get install python3-matplotlib); not part of CI.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on a benchmark machine
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from atomic_write import save_figure_atomically  # tools/atomic_write.py


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: plot_batching.py RESULTS.json OUT.png\n")
        return 2
    with open(argv[1]) as f:
        results = json.load(f)
    if results.get("experiment") != "seed":
        sys.stderr.write(f"plot_batching.py: {argv[1]} is not a seed experiment\n")
        return 2

    points = sorted(results["points"], key=lambda p: p["max_tokens"])
    caps = [p["max_tokens"] for p in points]
    static_rate = [p["static"]["tokens_per_s"] for p in points]
    continuous_rate = [p["continuous"]["tokens_per_s"] for p in points]
    ratio = [p["ratio"] for p in points]

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[2, 1])
    top.plot(caps, continuous_rate, "o-", label="continuous batching")
    top.plot(caps, static_rate, "s--", label="static batching")
    top.set_ylabel("generated tokens/s")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    top.legend()
    top.set_title(
        f"{results['requests']} requests, prompt {results['prompt_len']} tokens, "
        f"exp. output mean {results['mean_tokens']:g}, max batch {results['max_batch']}, "
        f"{results['threads']} threads",
        fontsize=9,
    )

    bottom.plot(caps, ratio, "d-", color="tab:green")
    bottom.axhline(1.0, color="gray", linewidth=0.8)
    bottom.set_ylabel("continuous / static")
    bottom.set_xlabel("max_tokens (output length cap)")
    bottom.set_xscale("log", base=2)
    bottom.set_xticks(caps, [str(c) for c in caps])
    bottom.grid(True, alpha=0.3)

    fig.tight_layout()
    save_figure_atomically(fig, argv[2], dpi=120)
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
