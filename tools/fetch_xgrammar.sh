#!/usr/bin/env bash
# xgrammar (Apache-2.0, https://github.com/mlc-ai/xgrammar), the grammar engine behind structured output
# (model/output_constraint.cpp): its source release from PyPI, pinned by sha256, unpacked into
# deps/xgrammar-VERSION/. Neither Debian nor a PyPI wheel ships its C++ library with headers, so CMake
# builds the library from this source (model/CMakeLists.txt). Idempotent; the unpacked tree appears
# atomically (a rename), so a build never sees half of it.
#   bash tools/fetch_xgrammar.sh        (tools/setup.sh runs it)
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=0.2.9
sha256=87b466bca2475e29bb0323abc62c6c33cbcbcff47e5fb800a3e2099ac9620b90
url=https://files.pythonhosted.org/packages/3a/2f/5bf8e8fa6619cff534932f79b0abc81a417d354bc5093252c1a6081d0a93/xgrammar-$version.tar.gz
deps=$repo_root/deps
target=$deps/xgrammar-$version
[ -f "$target/include/xgrammar/xgrammar.h" ] && exit 0

echo "fetch_xgrammar: fetching xgrammar $version from PyPI"
mkdir -p "$deps"
tmp=$(mktemp -d "$deps/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
curl -sSfL --retry 3 -o "$tmp/xgrammar.tar.gz" "$url" \
  || { echo "fetch_xgrammar: could not download $url" >&2; exit 1; }
if ! echo "$sha256  $tmp/xgrammar.tar.gz" | sha256sum --check --status; then
  echo "fetch_xgrammar: sha256 mismatch for xgrammar-$version.tar.gz (expected $sha256); refusing to use it" >&2
  exit 1
fi
# Only what the C++ library needs: its headers and sources, and the two header-only libraries it bundles.
tar xzf "$tmp/xgrammar.tar.gz" -C "$tmp" "xgrammar-$version/include" "xgrammar-$version/cpp" \
  "xgrammar-$version/3rdparty/picojson" "xgrammar-$version/3rdparty/dlpack/include" \
  "xgrammar-$version/LICENSE" "xgrammar-$version/NOTICE"
rm -rf "$target"
mv "$tmp/xgrammar-$version" "$target"
echo "fetch_xgrammar: ready: $target"
