#!/usr/bin/env python3
"""The headline figures in one command each: the run, its table, its JSON and its plot.

    python3 tools/figures.py seed [--out DIR] [bench_batching seed options...]
        static vs continuous batching at max_tokens 32 ... 1536 (bench_batching seed): the table on stdout,
        DIR/seed.json, DIR/seed.txt and DIR/seed.png (throughput gain on the y axis, as the seed's figure).
        On a GPU: ... seed --device cuda --dummy-weights config/llama-3.1-8b.json
    python3 tools/figures.py serving [--out DIR] [--clients 1,2,4,8,16,32,64] [--requests-per-client 4]
                                     [--serve-args "--threads 2"]
        the serving sweep: starts `inflight serve` on a free loopback port, runs tools/bench_serving.py at
        each number of concurrent clients, stops the server; DIR/serving-cN.json, DIR/serving.txt and
        DIR/serving.png (output tokens/s and latencies against clients).

DIR defaults to build/figures. Progress (each point, time so far, time left) goes to stderr. matplotlib
comes from Debian (python3-matplotlib), installed here when missing, as tools/fuzz.sh installs clang;
bench_serving.py runs in the test virtualenv (build/e2e-venv, made by ctest's e2e/virtualenv or here).
"""
import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
BUILD = os.environ.get("INFLIGHT_BUILD_DIR", os.path.join(ROOT, "build"))
VENV_PYTHON = os.path.join(BUILD, "e2e-venv", "bin", "python")


def log(message):
    sys.stderr.write(f"figures: {message}\n")
    sys.stderr.flush()


def plotting_python():
    """A python3 that has matplotlib: this one, else Debian's (installing python3-matplotlib if needed)."""
    def has_matplotlib(python):
        return subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode == 0
    for python in (sys.executable, "/usr/bin/python3"):
        if os.access(python, os.X_OK) and has_matplotlib(python):
            return python
    log("installing python3-matplotlib (Debian) for the plots")
    as_root = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*as_root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
                    "--no-install-recommends", "python3-matplotlib"], check=True)
    if not has_matplotlib("/usr/bin/python3"):
        sys.exit("figures: /usr/bin/python3 has no matplotlib even after installing python3-matplotlib")
    return "/usr/bin/python3"


def ensure_venv():
    if os.access(VENV_PYTHON, os.X_OK) and subprocess.run([VENV_PYTHON, "-c", "import httpx"],
                                                          capture_output=True).returncode == 0:
        return
    log("making the virtualenv build/e2e-venv for bench_serving.py (httpx)")
    subprocess.run([sys.executable, "-m", "venv", os.path.dirname(os.path.dirname(VENV_PYTHON))], check=True)
    subprocess.run([VENV_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "httpx==0.28.1"],
                   check=True)


def binary(name):
    path = os.path.join(BUILD, "bin", name)
    if not os.access(path, os.X_OK):
        sys.exit(f"figures: {path} is missing: build first (bash tools/setup.sh)")
    return path


def run_tee(command, table_path):
    """Runs `command`, its stdout echoed and saved to `table_path`, its stderr (progress) passed through."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    if process.wait() != 0:
        sys.exit(f"figures: {' '.join(command)} failed with exit code {process.returncode}")
    with open(table_path, "w") as out:
        out.writelines(lines)


def seed(out_dir, extra):
    plotter = plotting_python()
    json_path = os.path.join(out_dir, "seed.json")
    run_tee([binary("bench_batching"), "seed", "--json", json_path, *extra], os.path.join(out_dir, "seed.txt"))
    png = os.path.join(out_dir, "seed.png")
    subprocess.run([plotter, os.path.join(TOOLS, "plot_batching.py"), json_path, png], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"\nwrote {json_path}, {os.path.join(out_dir, 'seed.txt')} and {png}")


class Server:
    """`inflight serve` on a free loopback port; its stderr is drained (one log line per request)."""

    def __init__(self, args):
        self.process = subprocess.Popen([binary("inflight"), "serve", "--port", "0", "--log-requests", "off", *args],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.port, self.tail = None, []
        listening = threading.Event()

        def read():
            for line in self.process.stderr:
                self.tail = (self.tail + [line])[-20:]
                match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    listening.set()
            listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(120) or self.port is None:
            self.stop()
            sys.exit("figures: inflight serve did not start:\n" + "".join(self.tail))

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def serving(out_dir, clients, requests_per_client, serve_args, extra):
    plotter = plotting_python()
    ensure_venv()
    server = Server(shlex.split(serve_args))
    started, files = time.monotonic(), []
    work = [max(8, c * requests_per_client) for c in clients]  # a point's requests, its share of the time
    try:
        for i, count in enumerate(clients):
            json_path = os.path.join(out_dir, f"serving-c{count}.json")
            command = [VENV_PYTHON, os.path.join(TOOLS, "bench_serving.py"), "--base-url",
                       f"http://127.0.0.1:{server.port}", "--max-concurrency", str(count), "--num-requests",
                       str(work[i]), "--json", json_path, *extra]
            result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
            if result.returncode != 0:
                sys.exit(f"figures: bench_serving.py at {count} clients failed:\n{result.stdout}")
            sys.stdout.write(f"--- {count} concurrent clients\n{result.stdout}")
            sys.stdout.flush()
            files.append(json_path)
            elapsed = time.monotonic() - started
            left = elapsed * sum(work[i + 1:]) / sum(work[:i + 1])
            log(f"[{i + 1}/{len(clients)}] {count} clients done; {elapsed:.0f} s so far"
                + (f", about {left:.0f} s left" if i + 1 < len(clients) else ""))
    finally:
        server.stop()
    rows = ["| clients | requests | failed | req/s | output tok/s | TTFT p50 / p99 | TPOT p50 / p99 | ITL p50 / p99 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for count, path in zip(clients, files):
        with open(path) as f:
            point = json.load(f)
        rows.append(f"| {count} | {point['num_requests']} | {point['failed']} | {point['request_throughput']:.2f} | "
                    f"{point['output_tokens_per_s']:.0f} | "
                    + " | ".join(f"{point[f'{n}_p50']:.0f} / {point[f'{n}_p99']:.0f} ms" for n in ("ttft_ms", "tpot_ms", "itl_ms"))
                    + " |")
    table = "\n".join(rows) + "\n"
    print("\n" + table)
    with open(os.path.join(out_dir, "serving.txt"), "w") as out:
        out.write(table)
    png = os.path.join(out_dir, "serving.png")
    subprocess.run([plotter, os.path.join(TOOLS, "plot_serving.py"), png, *files], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"wrote {', '.join(os.path.basename(f) for f in files)}, serving.txt and {png}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=["seed", "serving"])
    parser.add_argument("--out", default=os.path.join(BUILD, "figures"))
    parser.add_argument("--clients", default="1,2,4,8,16,32,64")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--serve-args", default="")
    args, extra = parser.parse_known_args()
    os.makedirs(args.out, exist_ok=True)
    if args.figure == "seed":
        seed(args.out, extra)
    else:
        clients = [int(c) for c in args.clients.split(",")]
        if not clients or min(clients) < 1:
            sys.exit("figures: --clients wants positive integers, e.g. 1,2,4")
        serving(args.out, clients, args.requests_per_client, args.serve_args, extra)


if __name__ == "__main__":
    main()
