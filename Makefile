# cairn: `make run` starts the server on its embedded default; `make test` runs every test.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
BIN := bin/cairn
DATA ?= cairn-data
LISTEN ?= 127.0.0.1:7420
FUZZTIME ?= 30s
TEST_TIMEOUT ?= 20m

.PHONY: all build run test vet fuzz bench deps-run deps-test clean

all: build

deps-run:
	@scripts/deps.sh run

deps-test:
	@scripts/deps.sh test

build:
	GO=$(GO) scripts/build.sh $(BIN)

# Starts the server in the foreground: it prints its address and the admin
# token (the token is also in $(DATA)/admin.token). Ctrl-C stops it.
run: deps-run build
	@echo "starting cairn server (data in $(DATA)); admin token file: $(DATA)/admin.token"
	@$(BIN) server --data $(DATA) --listen $(LISTEN)

vet:
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./internal/repo

# The repository engine runs twice: as built (with the C zstd encoder) and
# with the pure-Go encoder that builds without a C compiler use.
test: deps-test build vet
	CAIRN_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	CGO_ENABLED=0 $(GO) test -count=1 ./internal/repo

# Runs every fuzz target for FUZZTIME each (corpora live in testdata/fuzz).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# BENCH_OUT=FILE also writes the repository benchmark's table to FILE, and the
# volume backup benchmark's to FILE's name with -volume before .md.
bench: build
	@scripts/deps.sh bench
	scripts/bench-snapshots.sh
	BENCH_OUT='$(BENCH_OUT)' scripts/bench-repo.sh
	BENCH_OUT='$(if $(BENCH_OUT),$(BENCH_OUT:.md=)-volume.md)' scripts/bench-volume-backup.sh

clean:
	rm -rf bin
