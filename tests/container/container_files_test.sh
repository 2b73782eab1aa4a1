#!/usr/bin/env bash
# The container image and the Cloudflare Containers controller, checked without a registry:
#   - the Dockerfile's shape (multi-stage bookworm slim, non-root, nats-server, health check),
#     and every COPY source present;
#   - every shared library orgd links comes from a package the runtime stage installs (or the
#     base image has);
#   - the entry point: config selection, the NATS controller fragment (escaping, mode 600, a bad
#     port refused), which nats-server accepts as orgd includes it;
#   - the image's config and the Cloudflare controller's config pass orgd --check-config through
#     the entry point;
#   - the Worker's routing tests (node --test), when node is installed;
#   - and, where a Docker daemon answers, the image built and run until /healthz answers.
# Usage: container_files_test.sh SOURCE_DIR ORGD_BINARY
set -euo pipefail

src=$1
orgd=$2
dockerfile=$src/deploy/docker/Dockerfile
entrypoint=$src/deploy/docker/entrypoint.sh
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the Dockerfile's shape
froms=$(grep -c '^FROM debian:bookworm-slim' "$dockerfile" || true)
[[ $froms -eq 2 ]] && pass "two stages on debian:bookworm-slim" || fail "expected 2 bookworm-slim stages, found $froms"
grep -q '^FROM debian:bookworm-slim AS build' "$dockerfile" && pass "a build stage" || fail "no build stage"
user=$(awk '/^USER /{u=$2} END{print u}' "$dockerfile")
case "$user" in
  '' | root | root:* | 0 | 0:*) fail "the image runs as root (USER '$user')" ;;
  *) pass "runs as $user" ;;
esac
grep -q '^HEALTHCHECK .*' "$dockerfile" && grep -A1 '^HEALTHCHECK' "$dockerfile" | grep -q '/healthz' \
  && pass "health check on /healthz" || fail "no HEALTHCHECK on /healthz"
runtime=$(awk '/^FROM /{stage++} stage==2' "$dockerfile")
grep -q 'nats-server' <<<"$runtime" && pass "nats-server in the runtime stage" || fail "no nats-server in the runtime stage"
grep -q '^ENTRYPOINT .*orgd-entrypoint' <<<"$runtime" && pass "entry point" || fail "no ENTRYPOINT to the entry point script"
while read -r source; do
  [[ -e $src/$source ]] && pass "COPY source $source" || fail "COPY source $source does not exist"
done < <(grep -E '^COPY [^-]' "$dockerfile" | awk '{for (i = 2; i < NF; i++) print $i}')

# --- shared libraries: each NEEDED entry's package is installed by the runtime stage
installed=$(sed -n '/^FROM debian:bookworm-slim$/,$p' "$dockerfile" | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' || true)
base="libc6 libstdc++6 libgcc-s1"
if command -v readelf >/dev/null && command -v dpkg >/dev/null; then
  while read -r lib; do
    case "$lib" in
      libasan.so* | libubsan.so* | libtsan.so* | liblsan.so*)
        echo "skip: $lib (a sanitizer preset's runtime; the image builds Release without it)"
        continue
        ;;
    esac
    path=$(ldd "$orgd" | awk -v l="$lib" '$1 == l {print $3}')
    [[ -n $path ]] || { fail "ldd does not resolve $lib"; continue; }
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1 || true)
    [[ -n $pkg ]] || pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1 || true)
    if [[ -z $pkg ]]; then
      fail "$lib ($path) belongs to no Debian package"
    elif grep -qx "$pkg" <<<"$installed" || [[ " $base " == *" $pkg "* ]]; then
      pass "$lib from $pkg"
    else
      fail "$lib comes from $pkg, which the runtime stage does not install"
    fi
  done < <(readelf -d "$orgd" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
else
  echo "skip: readelf or dpkg missing, shared libraries not checked"
fi

# --- the entry point
mkdir -p "$work/data/nats"
ORGD_DATA_DIR=$work/data ORGD_NATS_TOKEN='tok"en\x' ORGD_NATS_WEBSOCKET_PORT=18443 \
  ORGD_BINARY=/bin/true sh "$entrypoint" && pass "entry point runs" || fail "entry point failed"
fragment=$work/data/nats-controller.conf
[[ -f $fragment ]] && pass "fragment written" || fail "no fragment written"
[[ $(stat -c %a "$fragment") == 600 ]] && pass "fragment mode 600" || fail "fragment mode $(stat -c %a "$fragment")"
grep -qF 'authorization { token: "tok\"en\\x" }' "$fragment" && pass "token escaped" || fail "token not escaped: $(cat "$fragment")"
grep -qF 'websocket { port: 18443, no_tls: true }' "$fragment" && pass "websocket listener" || fail "no websocket listener"
if command -v nats-server >/dev/null; then
  printf 'port: -1\ninclude "../nats-controller.conf"\n' >"$work/data/nats/check.conf"
  nats-server -t -c "$work/data/nats/check.conf" >/dev/null 2>&1 && pass "nats-server accepts the fragment" \
    || fail "nats-server refuses the fragment: $(nats-server -t -c "$work/data/nats/check.conf" 2>&1)"
fi
if ORGD_DATA_DIR=$work/data ORGD_NATS_TOKEN=x ORGD_NATS_WEBSOCKET_PORT=84a3 ORGD_BINARY=/bin/true \
  sh "$entrypoint" 2>"$work/err"; then
  fail "a port that is not a number was accepted"
else
  grep -q 'ORGD_NATS_WEBSOCKET_PORT must be a port number' "$work/err" && pass "bad port refused" || fail "bad port: $(cat "$work/err")"
fi
chosen=$(env -u ORGD_CONFIG -u ORGD_CONFIG_YAML ORGD_BINARY=/usr/bin/env sh "$entrypoint" | sed -n 's/^ORGD_CONFIG=//p')
[[ $chosen == /etc/orgd/orgd.yaml ]] && pass "default config /etc/orgd/orgd.yaml" || fail "default config '$chosen'"
chosen=$(ORGD_CONFIG_YAML='org: x' ORGD_BINARY=/usr/bin/env sh "$entrypoint" | grep -c '^ORGD_CONFIG=' || true)
[[ $chosen == 0 ]] && pass "ORGD_CONFIG_YAML is not overridden" || fail "ORGD_CONFIG set beside ORGD_CONFIG_YAML"

# --- the shipped configs load, through the entry point as the container runs them
container_yaml=$(sed "s#/var/lib/orgd#$work/data#g" "$src/deploy/docker/orgd.container.yaml")
if out=$(env -u NATS_URL -u NATS_URLS ORGD_CONFIG_YAML="$container_yaml" ORGD_BINARY="$orgd" \
  sh "$entrypoint" --check-config 2>&1); then
  pass "image config: $out"
else
  fail "image config: $out"
fi
cloudflare_yaml=$(sed "s#/var/lib/orgd#$work/data#g" "$src/deploy/cloudflare/orgd.cloudflare.yaml")
if out=$(env -u NATS_URL -u NATS_URLS ORGD_CONFIG_YAML="$cloudflare_yaml" ORGD_DATA_DIR=$work/data \
  ORGD_NATS_TOKEN=controller-token ORGD_BINARY="$orgd" sh "$entrypoint" --check-config 2>&1); then
  pass "cloudflare controller config: $out"
else
  fail "cloudflare controller config: $out"
fi

# --- the Worker's routing
if command -v node >/dev/null; then
  if (cd "$src/deploy/cloudflare" && node --test test/ >"$work/node.log" 2>&1); then
    pass "worker routing tests"
  else
    cat "$work/node.log" >&2
    fail "worker routing tests"
  fi
else
  echo "skip: node is not installed, the Worker's routing tests did not run"
fi

# --- the image itself, where Docker is available
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  tag=orgd-test:$$
  if docker build -q -f "$dockerfile" -t "$tag" "$src" >"$work/build.log" 2>&1; then
    pass "image built"
    cid=$(docker run -d -P "$tag")
    port=$(docker port "$cid" 8080/tcp | head -n 1 | sed 's/.*://')
    ok=0
    for _ in $(seq 1 60); do
      if curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then ok=1; break; fi
      sleep 1
    done
    [[ $ok == 1 ]] && pass "the container answers /healthz" || fail "no /healthz from the container: $(docker logs "$cid" 2>&1 | tail -n 20)"
    [[ $(docker exec "$cid" id -u) != 0 ]] && pass "runs as non-root" || fail "runs as root"
    docker rm -f "$cid" >/dev/null
    docker rmi "$tag" >/dev/null
  else
    fail "docker build: $(tail -n 20 "$work/build.log")"
  fi
else
  echo "skip: no Docker daemon answers, the image was not built (structure checked above)"
fi

if [[ $failures -gt 0 ]]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all container checks passed"
