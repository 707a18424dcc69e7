#!/usr/bin/env bash
# The one test command (also `make test`, and what CI runs).
#
# Integration tests start real servers through internal/testenv: redis-server
# and bin/ferretdb (FerretDB with SQLite, a Mongo-compatible server). This
# script makes sure both exist and tells the tests where they are. Add new
# checks as separate numbered steps.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

step() { echo; echo "==> $*"; }

step "1. redis-server"
if ! command -v redis-server >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		echo "redis-server not found; installing with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server ||
			{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }
	else
		echo "error: redis-server not found; install it: sudo apt-get install -y redis-server" >&2
		exit 1
	fi
fi
PERSISTER_REDIS_SERVER_BIN=$(command -v redis-server)
export PERSISTER_REDIS_SERVER_BIN
echo "PERSISTER_REDIS_SERVER_BIN=$PERSISTER_REDIS_SERVER_BIN ($("$PERSISTER_REDIS_SERVER_BIN" --version | head -n1))"

step "2. bin/ferretdb (make ferretdb)"
make --no-print-directory ferretdb
export PERSISTER_FERRETDB_BIN="$ROOT/bin/ferretdb"
echo "PERSISTER_FERRETDB_BIN=$PERSISTER_FERRETDB_BIN"

step "2b. prometheus and promtool (the alert rules and dashboard queries run in a real Prometheus)"
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		echo "prometheus not found; installing Debian's prometheus package with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus ||
			{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }
	else
		echo "error: prometheus not found; install it: sudo apt-get install -y prometheus" >&2
		exit 1
	fi
fi
echo "$(prometheus --version 2>&1 | head -n1)"

step "2c. node, npm and bin/chronow-interop.cjs (make chronow-interop: the real Chronow library as the interop test's producer)"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		echo "node or npm not found; installing Debian's nodejs and npm with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm ||
			{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; } ||
			echo "warning: apt-get could not install nodejs and npm" >&2
	fi
fi
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	echo "node $(node --version), npm $(npm --version)"
	make --no-print-directory chronow-interop
	export PERSISTER_CHRONOW_INTEROP_BIN="$ROOT/bin/chronow-interop.cjs"
	echo "PERSISTER_CHRONOW_INTEROP_BIN=$PERSISTER_CHRONOW_INTEROP_BIN"
elif [ -n "${CI:-}" ]; then
	echo "error: node and npm are required in CI (the interop test runs the real Chronow library); install Node.js 18+ and npm" >&2
	exit 1
else
	echo "warning: node or npm not found: internal/interop will be skipped (install Node.js 18+ and npm)" >&2
fi

step "3. gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "error: files not gofmt-ed (run gofmt -w on them):" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo "ok"

step "4. go vet ./... (and tools/ferretdb, a separate module)"
go vet ./...
(cd tools/ferretdb && go vet ./...)
echo "ok"

step "5. go test -race -count=1 ./..."
# The fault-injection suite (internal/faults) writes its per-row summary here.
export PERSISTER_FAULTS_REPORT="${TMPDIR:-/tmp}/persister-faults-report.txt"
rm -f "$PERSISTER_FAULTS_REPORT"
go test -race -count=1 -timeout 20m ./...
if [ -s "$PERSISTER_FAULTS_REPORT" ]; then cat "$PERSISTER_FAULTS_REPORT"; fi

step "6. Helm chart and Dockerfile (make helmcheck: tools/helmcheck, a separate module)"
make --no-print-directory helmcheck

echo
echo "==> all tests passed"
