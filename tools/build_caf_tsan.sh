#!/usr/bin/env bash
# CAF 0.17.6, the version Debian 12 ships, built from Debian's source package with ThreadSanitizer into
# build-tsan/caf/ (include/, lib/), for tools/check_sanitizers.sh --thread. Debian's libcaf is not
# instrumented, so TSan would not see the synchronisation inside CAF's mailboxes and would report every
# message handed from one actor's thread to another as a race; linked against this build, it sees it.
# About 5 minutes on 2 cores; run once (check_sanitizers.sh calls it when build-tsan/caf is missing).
#
# Debian's patch tarball (actor-framework_0.17.6-2.1.debian.tar.xz) was not downloadable when this was
# written (404), so the one source change Debian makes to the installed headers is applied here by hand:
# `#include <limits>` in receive_buffer.hpp (for newer GCC). The headers installed here are then identical
# to /usr/include/caf (the script checks it). Debian's changelog also names a patch from upstream PR #1135
# that changes no header; it is not applied.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${1:-$repo_root/build-tsan/caf}
work=$repo_root/build-tsan/caf-src
version=0.17.6
orig_sha256=e2bf5bd243f08bb7d8adde197cfe3e6d71314ed3378fe0692f8932f4c3b3928c
as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)

mkdir -p "$work"
cd "$work"
if [ ! -f actor-framework_$version.orig.tar.gz ]; then
  if ! apt-get source --download-only actor-framework=$version-2.1 >/dev/null 2>&1; then
    # Source packages need a deb-src entry: the same archive as the binary packages.
    echo "build_caf_tsan: enabling Debian source packages (/etc/apt/sources.list.d/debian-src.sources)" >&2
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | "${as_root[@]}" tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    "${as_root[@]}" apt-get update -qq
    apt-get source --download-only actor-framework=$version-2.1 >/dev/null 2>&1 || true  # the debian tarball may 404
  fi
fi
echo "$orig_sha256  actor-framework_$version.orig.tar.gz" | sha256sum --check --status \
  || { echo "build_caf_tsan: actor-framework_$version.orig.tar.gz missing or its sha256 differs" >&2; exit 1; }
rm -rf actor-framework-$version build
tar xzf actor-framework_$version.orig.tar.gz
sed -i 's|#include <cstring>|#include <cstring>\n#include <limits>|' actor-framework-$version/libcaf_io/caf/io/network/receive_buffer.hpp

flags="-std=c++14 -g -O1 -fsanitize=thread -fno-omit-frame-pointer"
cmake -S actor-framework-$version -B build -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_INSTALL_RPATH='$ORIGIN' -DCMAKE_CXX_COMPILER=g++ -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
  -DCAF_NO_EXAMPLES=ON -DCAF_NO_UNIT_TESTS=ON -DCAF_NO_TOOLS=ON -DCAF_NO_PYTHON=ON -DCAF_NO_OPENCL=ON \
  -DCAF_NO_OPENSSL=OFF -DCAF_LOG_LEVEL=QUIET >/dev/null
cmake --build build -j "$(nproc)"
cmake --install build >/dev/null
diff -r "$prefix/include/caf" /usr/include/caf >/dev/null \
  || { echo "build_caf_tsan: the installed headers differ from Debian's /usr/include/caf" >&2; exit 1; }
echo "build_caf_tsan: CAF $version with TSan in $prefix"
