#!/bin/sh
# The container's entry point: orgd with the config the operator gave, else the image's own.
#   ORGD_CONFIG=/path/to/orgd.yaml      a mounted file (or: docker run ... orgd --config FILE)
#   ORGD_CONFIG_YAML="$(cat orgd.yaml)"  the whole config in a variable (platforms without mounts)
#   neither: /etc/orgd/orgd.yaml, the image's embedded-NATS config
# Secrets come from the variables the config names (token_env: X), or from X_FILE naming a
# mounted file (/run/secrets/x). Arguments are passed on to orgd (--check-config, --log-level ...).
#
# The org's NATS controller (deploy/cloudflare/): with ORGD_NATS_TOKEN set, the embedded
# nats-server's fragment $ORGD_DATA_DIR/nats-controller.conf is written first (mode 600): that
# token for every client, and a WebSocket listener on ORGD_NATS_WEBSOCKET_PORT when set. A config
# includes it with `nats.server_include` and connects with `nats.token_env: ORGD_NATS_TOKEN`.
set -eu

data_dir=${ORGD_DATA_DIR:-/var/lib/orgd}
if [ -n "${ORGD_NATS_TOKEN:-}" ]; then
  case "${ORGD_NATS_WEBSOCKET_PORT:-}" in
    '' | *[!0-9]*)
      if [ -n "${ORGD_NATS_WEBSOCKET_PORT:-}" ]; then
        echo "orgd-entrypoint: ORGD_NATS_WEBSOCKET_PORT must be a port number" >&2
        exit 2
      fi
      ;;
  esac
  umask 077
  escaped=$(printf '%s' "$ORGD_NATS_TOKEN" | sed 's/[\\"]/\\&/g')
  {
    echo "# Written by the container's entry point at every start: edits are lost."
    printf 'authorization { token: "%s" }\n' "$escaped"
    if [ -n "${ORGD_NATS_WEBSOCKET_PORT:-}" ]; then
      printf 'websocket { port: %s, no_tls: true }\n' "$ORGD_NATS_WEBSOCKET_PORT"
    fi
  } >"$data_dir/nats-controller.conf"
  unset escaped
fi

if [ -z "${ORGD_CONFIG:-}" ] && [ -z "${ORGD_CONFIG_YAML:-}" ]; then
  export ORGD_CONFIG=/etc/orgd/orgd.yaml
fi
exec "${ORGD_BINARY:-/usr/local/bin/orgd}" "$@"
