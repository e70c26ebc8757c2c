#!/usr/bin/env python3
"""Plot bench_serving.py results against the number of concurrent clients: output tokens/s (top), and
TTFT and TPOT at p50 and p99 (bottom, log scale).

    build/e2e-venv/bin/python tools/bench_serving.py --max-concurrency 8 --json c8.json   # per level
    python3 tools/plot_serving.py out.png c1.json c8.json c32.json c64.json

Needs matplotlib (apt-get install python3-matplotlib); not part of CI.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on a benchmark machine
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from atomic_write import save_figure_atomically  # tools/atomic_write.py


def main(argv):
    if len(argv) < 3:
        sys.stderr.write("usage: plot_serving.py OUT.png RESULTS.json...\n")
        return 2
    runs = []
    for path in argv[2:]:
        with open(path) as f:
            run = json.load(f)
        if "output_tokens_per_s" not in run or "max_concurrency" not in run:
            sys.stderr.write(f"plot_serving.py: {path} is not a bench_serving.py result\n")
            return 2
        runs.append(run)
    runs.sort(key=lambda r: r["max_concurrency"])
    clients = [r["max_concurrency"] for r in runs]

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[1, 1])
    top.plot(clients, [r["output_tokens_per_s"] for r in runs], "o-")
    top.set_ylabel("output tokens/s (all clients)")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    top.set_title(f"inflight serve: {runs[0]['prompt_len']}-token prompts, "
                  f"outputs exp. mean {runs[0]['output_mean']:g} (max {runs[0]['output_max']})")

    for metric, style in (("ttft", "o"), ("tpot", "s")):
        for pct, line in (("p50", "-"), ("p99", "--")):
            bottom.plot(clients, [r[f"{metric}_ms_{pct}"] for r in runs], style + line, label=f"{metric.upper()} {pct}")
    bottom.set_yscale("log")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("concurrent clients")
    bottom.set_xscale("log", base=2)
    bottom.set_xticks(clients)
    bottom.set_xticklabels([str(c) for c in clients])
    bottom.grid(True, which="both", alpha=0.3)
    bottom.legend()

    fig.tight_layout()
    save_figure_atomically(fig, argv[1], dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
