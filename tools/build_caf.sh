#!/usr/bin/env bash
# CAF 0.17.6, the version Debian 12 ships, built from Debian's source package with a sanitizer, for the runs
# that Debian's binary libcaf cannot serve:
#   bash tools/build_caf.sh thread PREFIX   g++ with ThreadSanitizer (tools/check_sanitizers.sh --thread).
#       Debian's libcaf is not instrumented, so TSan would not see the synchronisation inside CAF's mailboxes
#       and would report every message handed from one actor's thread to another as a race; linked against
#       this build, it sees it.
#   bash tools/build_caf.sh address PREFIX  g++ with ASan + UBSan and debug information, for reading a sanitizer
#       report whose stack runs through CAF (Debian's libcaf has no symbols for its internal functions):
#       configure build-asan/ with -DCAF_INCLUDE_DIR=PREFIX/include -DCAF_CORE_LIBRARY=PREFIX/lib/... as
#       tools/check_sanitizers.sh --thread does.
#   bash tools/build_caf.sh fuzz PREFIX     clang with ASan, UBSan and libFuzzer's coverage (tools/fuzz.sh
#       config). Each CAF option type has a meta-state, a function-local static in a header template
#       (make_config_option.hpp); g++ emits it and its guard as GNU-unique symbols, clang as weak ones, and in
#       one process the dynamic linker binds the two sides' copies inconsistently: linked against Debian's
#       g++-built libcaf, a clang-built program finds options whose check function is null, and its first
#       config read crashes. Built by the same compiler, both sides agree. Instrumented, CAF's INI parser
#       (what reads a config file first) is fuzzed too.
# About 5 minutes on 2 cores; run once (the scripts call it when PREFIX/lib/libcaf_core.so is missing).
#
# Debian's patch tarball (actor-framework_0.17.6-2.1.debian.tar.xz) was not downloadable when this was
# written (404), so the one source change Debian makes to the installed headers is applied here by hand:
# `#include <limits>` in receive_buffer.hpp (for newer GCC). The headers installed here are then identical
# to /usr/include/caf (the script checks it). Debian's changelog also names a patch from upstream PR #1135
# that changes no header; it is not applied.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-}
prefix=${2:-}
if [[ ! $mode =~ ^(thread|address|fuzz)$ ]] || [ -z "$prefix" ]; then
  echo "usage: tools/build_caf.sh thread|address|fuzz PREFIX" >&2
  exit 2
fi
work=$prefix-src
version=0.17.6
orig_sha256=e2bf5bd243f08bb7d8adde197cfe3e6d71314ed3378fe0692f8932f4c3b3928c
as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)

mkdir -p "$work"
cd "$work"
if [ ! -f actor-framework_$version.orig.tar.gz ]; then
  if ! apt-get source --download-only actor-framework=$version-2.1 >/dev/null 2>&1; then
    # Source packages need a deb-src entry: the same archive as the binary packages.
    echo "build_caf: enabling Debian source packages (/etc/apt/sources.list.d/debian-src.sources)" >&2
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | "${as_root[@]}" tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    "${as_root[@]}" apt-get update -qq
    apt-get source --download-only actor-framework=$version-2.1 >/dev/null 2>&1 || true  # the debian tarball may 404
  fi
fi
echo "$orig_sha256  actor-framework_$version.orig.tar.gz" | sha256sum --check --status \
  || { echo "build_caf: actor-framework_$version.orig.tar.gz missing or its sha256 differs" >&2; exit 1; }
rm -rf actor-framework-$version build
tar xzf actor-framework_$version.orig.tar.gz
sed -i 's|#include <cstring>|#include <cstring>\n#include <limits>|' actor-framework-$version/libcaf_io/caf/io/network/receive_buffer.hpp

if [ $mode = thread ]; then
  compiler=g++
  flags="-std=c++14 -g -O1 -fsanitize=thread -fno-omit-frame-pointer"
  link_flags=-fsanitize=thread
elif [ $mode = address ]; then
  compiler=g++
  flags="-std=c++14 -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer"
  link_flags="-fsanitize=address,undefined"
else
  compiler=clang++
  # No -fsanitize=function: CAF's type-erased calls through void* would all be reported.
  flags="-std=c++14 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=function -fno-omit-frame-pointer"
  link_flags="-fsanitize=address,undefined"
fi
cmake -S actor-framework-$version -B build -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_INSTALL_RPATH='$ORIGIN' -DCMAKE_CXX_COMPILER=$compiler -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_SHARED_LINKER_FLAGS="$link_flags" -DCMAKE_EXE_LINKER_FLAGS="$link_flags" \
  -DCAF_NO_EXAMPLES=ON -DCAF_NO_UNIT_TESTS=ON -DCAF_NO_TOOLS=ON -DCAF_NO_PYTHON=ON -DCAF_NO_OPENCL=ON \
  -DCAF_NO_OPENSSL=OFF -DCAF_LOG_LEVEL=QUIET >/dev/null
cmake --build build -j "$(nproc)"
cmake --install build >/dev/null
diff -r "$prefix/include/caf" /usr/include/caf >/dev/null \
  || { echo "build_caf: the installed headers differ from Debian's /usr/include/caf" >&2; exit 1; }
echo "build_caf: CAF $version for $mode in $prefix"
