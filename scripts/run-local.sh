#!/usr/bin/env bash
# Runs the persister on a local default: a local redis-server and a local
# Mongo-compatible server (FerretDB, built from its Go module into
# bin/ferretdb), both started here with their data under .run/, and
# optionally the demo publisher (DEMO=1). Ctrl-C stops everything.
#
#   make run            # or: bash scripts/run-local.sh
#   DEMO=1 make run     # also publish demo entries
#
# Ports: REDIS_PORT (default 6379), MONGO_PORT (27017), HTTP (9464).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUN="$ROOT/.run"
REDIS_PORT=${REDIS_PORT:-6379}
MONGO_PORT=${MONGO_PORT:-27017}
mkdir -p "$RUN/redis"

make --no-print-directory redis ferretdb build

# Children run in their own sessions (setsid) so that Ctrl-C reaches only
# this script, which stops them in order: the persister first (it flushes and
# acks what it holds), then the demo publisher and the servers.
pids=()
persister_pid=""
cleanup() {
	trap - EXIT INT TERM
	if [ -n "$persister_pid" ]; then
		kill -TERM "$persister_pid" 2>/dev/null || true
		wait "$persister_pid" 2>/dev/null || true
	fi
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
	echo "redis: using the server already on port $REDIS_PORT"
else
	echo "redis: starting redis-server on 127.0.0.1:$REDIS_PORT (AOF on, data in .run/redis)"
	setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN/redis" --appendonly yes \
		--notify-keyspace-events K\$g >"$RUN/redis.log" 2>&1 &
	pids+=($!)
fi
echo "mongo: starting FerretDB on 127.0.0.1:$MONGO_PORT (SQLite data in .run/ferretdb)"
setsid "$ROOT/bin/ferretdb" -listen-addr "127.0.0.1:$MONGO_PORT" -state-dir "$RUN/ferretdb" >"$RUN/ferretdb.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && grep -q "ready" "$RUN/ferretdb.log" && break
	sleep 0.1
done

export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export MONGO_URI=${MONGO_URI:-mongodb://127.0.0.1:$MONGO_PORT}
export PERSISTER_LOG_FORMAT=${PERSISTER_LOG_FORMAT:-text}
if [ "${DEMO:-0}" = 1 ]; then
	echo "demo: publishing Chronow entries for tenant default (bin/persister-demo)"
	go build -o "$ROOT/bin/persister-demo" ./cmd/persister-demo
	setsid "$ROOT/bin/persister-demo" -redis-url "$REDIS_URL" -rate "${DEMO_RATE:-20}" >"$RUN/demo.log" 2>&1 &
	pids+=($!)
fi
echo "persister: metrics on http://127.0.0.1:9464/metrics, readiness on /readyz; Ctrl-C stops"
setsid "$ROOT/bin/persister" run &
persister_pid=$!
wait "$persister_pid" || true
persister_pid=""
