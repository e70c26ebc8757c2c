#!/usr/bin/env python3
"""Plot the seed experiment of bench_batching: the throughput gain of continuous over static batching
against the max_tokens cap (log2 axis), as in the seed's figure, and the two tokens/s rates below it.

    build/bin/bench_batching seed --json results.json
    python3 tools/plot_batching.py results.json out.png

Needs matplotlib (apt-get install python3-matplotlib; tools/figures.py installs it).
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

    # As in the seed's figure: the throughput gain of continuous over static batching is the plot; the two
    # rates it is the ratio of are below it.
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[2, 1])
    top.plot(caps, ratio, "d-", color="tab:green", label="continuous / static")
    for cap, gain in zip(caps, ratio):
        top.annotate(f"{gain:.1f}x", (cap, gain), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    top.axhline(1.0, color="gray", linewidth=0.8)
    top.set_ylabel("throughput gain (continuous / static)")
    top.set_ylim(bottom=0, top=max(ratio + [1.0]) * 1.15)
    top.grid(True, alpha=0.3)
    top.set_title(
        f"{results['requests']} requests, prompt {results['prompt_len']} tokens, "
        f"exp. output mean {results['mean_tokens']:g}, max batch {results['max_batch']}, "
        f"{'CUDA' if 'cuda' in results.get('backend', '').lower() else 'CPU'}, {results['threads']} threads",
        fontsize=9,
    )

    bottom.plot(caps, continuous_rate, "o-", label="continuous batching")
    bottom.plot(caps, static_rate, "s--", label="static batching")
    bottom.set_ylabel("generated tokens/s")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("max_tokens (output length cap)")
    bottom.set_xscale("log", base=2)
    bottom.set_xticks(caps, [str(c) for c in caps])
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8)

    fig.tight_layout()
    save_figure_atomically(fig, argv[2], dpi=120)
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
