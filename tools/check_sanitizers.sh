#!/usr/bin/env bash
# The ctest suite under AddressSanitizer + UndefinedBehaviorSanitizer, in a build directory of its own
# (build-asan/, CUDA off: the sanitizers do not see device code, and no GPU runs it here).
#   bash tools/check_sanitizers.sh            # configure, build, run every test
#   bash tools/check_sanitizers.sh -R engine  # extra arguments go to ctest
# Debian's libcaf is not instrumented: ASan still checks our side of every call, but its container-overflow
# check would misfire on std::vector objects that CAF (uninstrumented) grows, so that one check is off.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${INFLIGHT_ASAN_BUILD_DIR:-$repo_root/build-asan}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
generator=(); [ -f "$build_dir/CMakeCache.txt" ] || generator=(-G Ninja)
cmake -S "$repo_root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLIGHT_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
# The e2e tests use the virtualenv of the main build when it is there (it is only Python packages).
[ -d "$repo_root/build/e2e-venv" ] && [ ! -e "$build_dir/e2e-venv" ] && ln -s "$repo_root/build/e2e-venv" "$build_dir/e2e-venv"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_container_overflow=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "$@"
