# Developer entry points. One target per block; add new targets below.
#
#   make test      - the one test command (gofmt, go vet, go test -race with real servers)
#   make build     - bin/persister
#   make ferretdb  - bin/ferretdb (FerretDB + SQLite, Mongo-compatible test server)
#   make redis     - make sure redis-server is installed
#   make helmcheck - lint, render and check the Helm chart; check the Dockerfile
#   make bench     - the performance benchmark (fresh redis-server + FerretDB; 15-20 min; BENCH_ARGS=...)
#   make chronow-interop - bin/chronow-interop.cjs (the real Chronow library as a producer, for internal/interop)
#   make chaos     - the randomized chaos soak (10 min of faults; SEED=, DURATION=, CHAOS_ARGS=...)

SHELL := bash
.DEFAULT_GOAL := build

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: test
test:
	bash scripts/test.sh

.PHONY: build
build:
	go build -ldflags "-X main.version=$(VERSION)" -o bin/persister ./cmd/persister

# bin/ferretdb is rebuilt only when its sources change (it is a separate Go
# module, so FerretDB never enters the product's go.mod).
.PHONY: ferretdb
ferretdb: bin/ferretdb

bin/ferretdb: tools/ferretdb/main.go tools/ferretdb/go.mod tools/ferretdb/go.sum
	@echo "building bin/ferretdb (FerretDB + pure-Go SQLite; the first build takes a few minutes)"
	cd tools/ferretdb && go build -o ../../bin/ferretdb .

# The Helm chart and the Dockerfile, checked with the Helm library in its own
# module (helm.sh/helm/v3 never enters the product's go.mod): lint and render
# every mode, check the manifests, fail on a broken template, and compile the
# Dockerfile's own go build line. The first build of the module takes minutes.
.PHONY: helmcheck
helmcheck:
	cd tools/helmcheck && go vet ./... && go test -count=1 -timeout 30m ./...

.PHONY: redis
redis:
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server: $$(command -v redis-server) ($$(redis-server --version | head -n1))"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "redis-server not found; installing with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server || \
			{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }; \
	else \
		echo "error: redis-server not found; install it: sudo apt-get install -y redis-server" >&2; \
		exit 1; \
	fi

# The daemon on a local default: redis-server and FerretDB started for you
# (data in .run/); DEMO=1 also runs the demo publisher.
.PHONY: run
run:
	bash scripts/run-local.sh

# The benchmark of issues 8 and 16: the sink alone at 1/2/4/8 writes in
# flight per layout, drains of every layout, steady latency, CPU and memory,
# 1/1000 streams, 1/2 replicas, the adaptive limit around a stopped server,
# against its own fresh servers (docs/performance.md).
# The table is printed and written to bench-results.md.
.PHONY: bench
bench: ferretdb redis
	go run ./cmd/persister-bench --markdown bench-results.md $(BENCH_ARGS)

# The interop test's producer (internal/interop): the real Chronow library
# (third_party/chronow) driven by tools/chronow-interop/src, bundled with a
# pinned esbuild into one file run by node. npm ci runs only when the lock
# file changed, esbuild only when an input changed.
CHRONOW_INTEROP_DIR := tools/chronow-interop
CHRONOW_INTEROP_INPUTS := $(shell find third_party/chronow $(CHRONOW_INTEROP_DIR)/src -type f 2>/dev/null) \
	$(CHRONOW_INTEROP_DIR)/build.mjs

.PHONY: chronow-interop
chronow-interop: bin/chronow-interop.cjs

$(CHRONOW_INTEROP_DIR)/node_modules/.package-lock.json: $(CHRONOW_INTEROP_DIR)/package.json $(CHRONOW_INTEROP_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found; install Node.js 18+ and npm (apt-get install -y nodejs npm)" >&2; exit 1; }
	cd $(CHRONOW_INTEROP_DIR) && npm ci --no-audit --no-fund --prefer-offline --loglevel=error
	@touch $@

bin/chronow-interop.cjs: $(CHRONOW_INTEROP_INPUTS) $(CHRONOW_INTEROP_DIR)/node_modules/.package-lock.json
	@mkdir -p bin
	cd $(CHRONOW_INTEROP_DIR) && node build.mjs ../../bin/chronow-interop.cjs
# The randomized chaos soak of issue 18: 3 replicas of the real binary,
# redis-server (AOF) and two FerretDB servers, a seeded nemesis overlapping
# faults, a quiet period and a Jepsen-style checker. SEED=0 picks one from
# the clock; the seed, the schedule and the history are written to the
# output directory printed at the end (a failure prints the replay command).
SEED ?= 0
DURATION ?= 10m
.PHONY: chaos
chaos: ferretdb redis
	PERSISTER_FERRETDB_BIN=$(CURDIR)/bin/ferretdb go run ./cmd/persister-chaos -seed $(SEED) -duration $(DURATION) $(CHAOS_ARGS)
