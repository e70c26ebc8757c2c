#!/usr/bin/env bash
# Runs one fuzz target of tests/fuzz with libFuzzer, ASan and UBSan, in a build directory of its own
# (build-fuzz/, clang, CUDA off):
#   bash tools/fuzz.sh TARGET SECONDS [libFuzzer options...]   e.g. bash tools/fuzz.sh http_session 600
#   bash tools/fuzz.sh list                                     the targets
# New inputs go to build-fuzz/corpus/TARGET (the committed seeds in tests/fuzz/corpus/TARGET are read too);
# a crash, leak or hang is written to build-fuzz/findings/TARGET/ and the run stops with its report. To
# keep a finding: fix it, add a doctest regression case, and copy the input into tests/fuzz/corpus/TARGET
# (the ctest replay then runs it forever). The last lines printed are the figures README quotes:
# executions (stat::number_of_executed_units), coverage (cov: edges) and features (ft:).
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${INFLIGHT_FUZZ_BUILD_DIR:-$repo_root/build-fuzz}
targets=$(sed -n 's/^inflight_fuzz_target(\([a-z_]*\).*/\1/p' "$repo_root/tests/fuzz/CMakeLists.txt")
if [ "${1:-}" = list ]; then echo "$targets"; exit 0; fi
if [ $# -lt 2 ] || ! grep -qx "$1" <<<"$targets" || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: tools/fuzz.sh TARGET SECONDS [libFuzzer options...]; targets:" $targets >&2
  exit 2
fi
target=$1 seconds=$2
shift 2
if [ "$target" = config ]; then
  # See tests/fuzz/fuzz_config.cpp: with clang's objects against Debian's g++-built libcaf, every input
  # crashes inside CAF's config_option::check (a null meta-state function), so there is nothing to learn.
  echo "fuzz.sh: the config target cannot run under libFuzzer against Debian's libcaf (built by g++): every" >&2
  echo "input crashes inside CAF (tests/fuzz/fuzz_config.cpp says why). ctest replays its corpus instead." >&2
  exit 2
fi

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: installing clang (libFuzzer comes with it)" >&2
  as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang
fi
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S "$repo_root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DINFLIGHT_FUZZ=ON -DINFLIGHT_TESTS=OFF -DINFLIGHT_CUDA=OFF >/dev/null
fi
cmake --build "$build_dir" -j "$(nproc)" --target "fuzz_$target"

corpus=$build_dir/corpus/$target findings=$build_dir/findings/$target
mkdir -p "$corpus" "$findings"
# CAF (the config target) is not instrumented: its std::vector growth would trip the container-overflow check.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_container_overflow=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$build_dir/bin/fuzz_$target" "$corpus" "$repo_root/tests/fuzz/corpus/$target" -max_total_time="$seconds" \
  -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$findings/" "$@"
