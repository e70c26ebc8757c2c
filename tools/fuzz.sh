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
if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: installing clang (libFuzzer comes with it)" >&2
  as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang
fi
caf_options=()
if [ "$target" = config ]; then
  # The config reader is CAF's: it needs a CAF built by clang (tools/build_caf.sh says why), which is then
  # instrumented and fuzzed with it.
  caf=$build_dir/caf
  [ -f "$caf/lib/libcaf_core.so" ] || bash "$repo_root/tools/build_caf.sh" fuzz "$caf"
  caf_options=(-DCAF_INCLUDE_DIR="$caf/include" -DCAF_CORE_LIBRARY="$caf/lib/libcaf_core.so"
               -DCAF_IO_LIBRARY="$caf/lib/libcaf_io.so" -DCAF_OPENSSL_LIBRARY="$caf/lib/libcaf_openssl.so")
fi
bash "$repo_root/tools/fetch_xgrammar.sh"  # CMake needs its source (model/CMakeLists.txt)
generator=(); [ -f "$build_dir/CMakeCache.txt" ] || generator=(-G Ninja)
cmake -S "$repo_root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DINFLIGHT_FUZZ=ON -DINFLIGHT_TESTS=OFF -DINFLIGHT_CUDA=OFF "${caf_options[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target "fuzz_$target"

corpus=$build_dir/corpus/$target findings=$build_dir/findings/$target
mkdir -p "$corpus" "$findings"
# Container-overflow checks need every object that touches a container instrumented; the system libraries
# (libstdc++, OpenSSL) are not.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_container_overflow=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$build_dir/bin/fuzz_$target" "$corpus" "$repo_root/tests/fuzz/corpus/$target" -max_total_time="$seconds" \
  -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$findings/" "$@"
