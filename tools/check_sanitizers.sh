#!/usr/bin/env bash
# The test suite under sanitizers, each in a build directory of its own (CUDA off: the sanitizers do not
# see device code, and no GPU runs it here).
#   bash tools/check_sanitizers.sh                     ASan + UBSan, build-asan/, every ctest test but the soak
#   bash tools/check_sanitizers.sh --units             ASan + UBSan, build-asan/, the unit suites of what takes
#                                                      untrusted input (parsers, tokenizer, server sessions) and
#                                                      of the engine's bookkeeping, and every fuzz corpus replay;
#                                                      builds only what they need (CI runs this)
#   bash tools/check_sanitizers.sh --thread            TSan, build-tsan/, the engine, scheduler and server suites
#   bash tools/check_sanitizers.sh [MODE] -R NAME      extra arguments go to ctest (they replace the mode's
#                                                      selection; --units and --thread still build only theirs)
# Debian's libcaf is not instrumented. ASan still checks our side of every call, but its container-overflow
# check would misfire on std::vector objects that CAF grows, so that one check is off. TSan cannot work
# without seeing the synchronisation inside CAF (its mailboxes), so --thread links a CAF 0.17.6 built with
# TSan from Debian's source (tools/build_caf.sh thread, run here when build-tsan/caf is missing);
# tools/tsan.supp lists what is suppressed and why.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=address
case "${1:-}" in
  --thread) mode=thread; shift ;;
  --units) mode=units; shift ;;
esac
# Each selection is a list of suites (executables whose doctest cases ctest runs as SUITE/case).
unit_suites=(test_gguf test_tokenizer test_detokenizer test_chat_template test_sampling test_stop_matcher
             test_request_output test_scheduler test_kv_cache_manager test_routing_policy test_cluster_auth
             test_atomic_file test_config_file test_output_constraint test_structured_output_request test_openai_request
             test_openai_response test_tool_calls test_request_fields test_http_server test_server_limits
             test_server_faults test_engine_faults test_tool_calls_server test_request_fields_server)
fuzz_replays=(fuzz_openai_request fuzz_gguf fuzz_tokenizer fuzz_chat_template fuzz_http_session fuzz_websocket
              fuzz_config)
thread_suites=(test_engine test_engine_faults test_scheduler test_kv_cache_manager test_http_server test_server_faults
               test_server_limits test_thread_pool test_structured_output test_tool_calls_server)
suites_regex() { local IFS='|'; echo "^($*)/"; }

if [ $mode = thread ]; then
  build_dir=${INFLIGHT_TSAN_BUILD_DIR:-$repo_root/build-tsan}
  flags="-fsanitize=thread -fno-omit-frame-pointer"
  link_flags="-fsanitize=thread"
  caf=$build_dir/caf
  [ -f "$caf/lib/libcaf_core.so" ] || bash "$repo_root/tools/build_caf.sh" thread "$caf"
  # The forward pass's arithmetic uninstrumented (model/CMakeLists.txt says why), CAF and xgrammar instrumented.
  extra_options=(-DINFLIGHT_SANITIZE_KERNELS=OFF -DINFLIGHT_SANITIZE_XGRAMMAR=ON -DCAF_INCLUDE_DIR="$caf/include"
               -DCAF_CORE_LIBRARY="$caf/lib/libcaf_core.so" -DCAF_IO_LIBRARY="$caf/lib/libcaf_io.so"
               -DCAF_OPENSSL_LIBRARY="$caf/lib/libcaf_openssl.so")
  targets=("${thread_suites[@]}")
  default_selection=(-R "$(suites_regex "${thread_suites[@]}")")
else
  build_dir=${INFLIGHT_ASAN_BUILD_DIR:-$repo_root/build-asan}
  flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  link_flags="-fsanitize=address,undefined"
  extra_options=()
  if [ $mode = units ]; then
    targets=("${unit_suites[@]}" "${fuzz_replays[@]}")
    default_selection=(-R "$(suites_regex "${unit_suites[@]}" fuzz)")
  else
    targets=()  # everything
    # The soak's checks (request timeouts, RSS drift) assume native speed and glibc's allocator; under ASan
    # (its quarantine holds freed memory) they measure the sanitizer, not inflight.
    default_selection=(-E "^e2e/soak_60s$")
  fi
fi
bash "$repo_root/tools/fetch_xgrammar.sh"  # CMake needs its source (model/CMakeLists.txt)
generator=(); [ -f "$build_dir/CMakeCache.txt" ] || generator=(-G Ninja)
cmake -S "$repo_root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLIGHT_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$link_flags" "${extra_options[@]}" >/dev/null
target_options=(); ((${#targets[@]})) && target_options=(--target "${targets[@]}")
cmake --build "$build_dir" -j "$(nproc)" "${target_options[@]}"
# The e2e tests use the virtualenv of the main build when it is there (it is only Python packages).
[ -d "$repo_root/build/e2e-venv" ] && [ ! -e "$build_dir/e2e-venv" ] && ln -s "$repo_root/build/e2e-venv" "$build_dir/e2e-venv"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_container_overflow=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$repo_root/tools/tsan.supp}
selection=("$@"); [ $# -gt 0 ] || selection=("${default_selection[@]}")
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "${selection[@]}"
