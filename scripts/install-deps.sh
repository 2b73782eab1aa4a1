#!/usr/bin/env bash
# Installs the Debian packages orgd builds and tests with (DESIGN.md §3), and the libFuzzer
# runtime of the installed clang (the fuzz build, `make test`'s fuzz smoke).
# Idempotent: only what is missing is installed. Runs as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config make git clang procps
  libnats-dev nats-server
  libboost-dev libssl-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev libsodium-dev
  libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl openssl
)

# Runs a command as root: directly, or through sudo.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install-deps: $* needs root, and there is no sudo" >&2
    exit 1
  fi
}

updated=0
apt_update_once() {
  if [[ $updated -eq 0 ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    updated=1
  fi
}

# Installs the named packages (all of them missing).
install_packages() {
  echo "install-deps: installing $*" >&2
  apt_update_once
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  install_packages "${missing[@]}"
fi

# libFuzzer ships with clang's runtime libraries, in a package named after clang's major version
# (Debian bookworm: clang 14, libclang_rt.fuzzer-x86_64.a in libclang-rt-14-dev). Whether it is
# there is asked of clang itself: a fuzz target that links proves it, whichever clang `clang++`
# is.
fuzzer_links() {
  local dir status
  dir=$(mktemp -d)
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
    >"$dir/probe.cpp"
  status=0
  clang++ -fsanitize=fuzzer "$dir/probe.cpp" -o "$dir/probe" >/dev/null 2>&1 || status=$?
  rm -rf "$dir"
  return $status
}

if ! fuzzer_links; then
  major=$(clang++ --version | sed -n 's/.*clang version \([0-9][0-9]*\)\..*/\1/p' | head -n 1)
  if [[ -z "$major" ]]; then
    echo "install-deps: cannot tell the version of clang++ ($(command -v clang++))" >&2
    exit 1
  fi
  runtime=libclang-rt-$major-dev
  if ! installed "$runtime"; then
    apt_update_once
    # Releases before the split (LLVM 14's packaging) kept it in libclang-common-N-dev.
    apt-cache show "$runtime" >/dev/null 2>&1 || runtime=libclang-common-$major-dev
    installed "$runtime" || install_packages "$runtime"
  fi
  if ! fuzzer_links; then
    echo "install-deps: clang++ $major cannot link -fsanitize=fuzzer although $runtime is" \
         "installed" >&2
    exit 1
  fi
fi

# The example remote provider (deploy/examples/remote-provider, JavaScript on the npm nats client)
# and its end-to-end test: node and npm from Debian when missing, then its packages from its
# package-lock.json (`npm ci`) when its node_modules is missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  node_missing=()
  installed nodejs || node_missing+=(nodejs)
  installed npm || node_missing+=(npm)
  if [[ ${#node_missing[@]} -gt 0 ]]; then
    install_packages "${node_missing[@]}"
  fi
fi
example_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/examples/remote-provider"
if [[ ! -d "$example_dir/node_modules/nats" || ! -d "$example_dir/node_modules/libsodium-wrappers" ]]; then
  echo "install-deps: npm ci in $example_dir" >&2
  (cd "$example_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
