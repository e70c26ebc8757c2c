#!/usr/bin/env bash
# The test suite under sanitizers, each in a build directory of its own (CUDA off: the sanitizers do not
# see device code, and no GPU runs it here).
#   bash tools/check_sanitizers.sh                     ASan + UBSan, build-asan/, every ctest test but the soak
#   bash tools/check_sanitizers.sh --thread            TSan, build-tsan/, the engine, scheduler and server suites
#   bash tools/check_sanitizers.sh [--thread] -R NAME  extra arguments go to ctest (they replace the default
#                                                      selection of --thread)
# Debian's libcaf is not instrumented. ASan still checks our side of every call, but its container-overflow
# check would misfire on std::vector objects that CAF grows, so that one check is off. TSan cannot work
# without seeing the synchronisation inside CAF (its mailboxes), so --thread links a CAF 0.17.6 built with
# TSan from Debian's source (tools/build_caf_tsan.sh, run here when build-tsan/caf is missing);
# tools/tsan.supp lists what is suppressed and why.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=address
if [ "${1:-}" = --thread ]; then mode=thread; shift; fi
if [ $mode = address ]; then
  build_dir=${INFLIGHT_ASAN_BUILD_DIR:-$repo_root/build-asan}
  flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  link_flags="-fsanitize=address,undefined"
  extra_options=()
  # The soak's checks (request timeouts, RSS drift) assume native speed and glibc's allocator; under ASan
  # (its quarantine holds freed memory) they measure the sanitizer, not inflight.
  default_selection=(-E "^e2e/soak_60s$")
else
  build_dir=${INFLIGHT_TSAN_BUILD_DIR:-$repo_root/build-tsan}
  flags="-fsanitize=thread -fno-omit-frame-pointer"
  link_flags="-fsanitize=thread"
  caf=$build_dir/caf
  [ -f "$caf/lib/libcaf_core.so" ] || bash "$repo_root/tools/build_caf_tsan.sh" "$caf"
  # The forward pass's arithmetic uninstrumented (model/CMakeLists.txt says why), CAF instrumented.
  extra_options=(-DINFLIGHT_SANITIZE_KERNELS=OFF -DCAF_INCLUDE_DIR="$caf/include"
               -DCAF_CORE_LIBRARY="$caf/lib/libcaf_core.so" -DCAF_IO_LIBRARY="$caf/lib/libcaf_io.so"
               -DCAF_OPENSSL_LIBRARY="$caf/lib/libcaf_openssl.so")
  default_selection=(-R "^(test_engine|test_engine_faults|test_scheduler|test_kv_cache_manager|test_http_server|test_server_faults|test_server_limits|test_thread_pool)/")
fi
generator=(); [ -f "$build_dir/CMakeCache.txt" ] || generator=(-G Ninja)
cmake -S "$repo_root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLIGHT_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$link_flags" "${extra_options[@]}" >/dev/null
if [ $mode = address ]; then
  cmake --build "$build_dir" -j "$(nproc)"
else  # only what the selected suites need
  cmake --build "$build_dir" -j "$(nproc)" --target test_engine test_engine_faults test_scheduler \
    test_kv_cache_manager test_http_server test_server_faults test_server_limits test_thread_pool
fi
# The e2e tests use the virtualenv of the main build when it is there (it is only Python packages).
[ -d "$repo_root/build/e2e-venv" ] && [ ! -e "$build_dir/e2e-venv" ] && ln -s "$repo_root/build/e2e-venv" "$build_dir/e2e-venv"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_container_overflow=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$repo_root/tools/tsan.supp}
selection=("$@"); [ $# -gt 0 ] || selection=("${default_selection[@]}")
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "${selection[@]}"
