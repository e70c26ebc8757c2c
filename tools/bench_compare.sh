#!/usr/bin/env bash
# inflight's CPU backend and llama.cpp on the same GGUF, the same workloads, in one run, side by side.
#   bash tools/bench_compare.sh [MODEL]
# Needs $BUILD_DIR/bin/bench_cpu (default build/; tools/setup.sh builds it) and llama-cpp-python in $REF_PYTHON's environment
# (default /opt/refvenv/bin/python; see README). Not run by CI. Writes bench_cpu.json and
# bench_llama_cpp.json next to the table in $OUT_DIR (default build/bench).
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=${1:-$repo_root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ref_python=${REF_PYTHON:-/opt/refvenv/bin/python}
build_dir=${BUILD_DIR:-$repo_root/build}
out_dir=${OUT_DIR:-$build_dir/bench}
threads=${THREADS:-$(nproc)}
mkdir -p "$out_dir"

"$build_dir/bin/bench_cpu" --model "$model" --threads "$threads" --json "$out_dir/bench_cpu.json"
echo
"$ref_python" "$repo_root/tools/bench_llama_cpp.py" --model "$model" --threads "$threads" \
  --json "$out_dir/bench_llama_cpp.json"
echo
python3 - "$out_dir/bench_cpu.json" "$out_dir/bench_llama_cpp.json" <<'PY'
import json, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
rows = [("prefill (512 tokens)", "prefill_tokens_per_s"), ("single-stream decode", "decode_tokens_per_s")]
print("| workload | inflight tok/s | llama.cpp tok/s | inflight / llama.cpp |")
print("|---|---:|---:|---:|")
def row(name, a, b):
    print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
for name, key in rows:
    row(name, ours[key], theirs[key])
for batch in ("1", "4", "16", "64"):
    row(f"batched decode, batch {batch}", ours["batched"][batch], theirs["batched"][batch])
PY
