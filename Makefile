# ferry — build, test and release helpers. `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO ?= go
PKG := github.com/ferry-oci/ferry
BIN := bin/ferry

# Tools installed with `go install` (staticcheck, crane) land in GOBIN, or
# the first GOPATH entry's bin; put it on PATH for every recipe.
GOBIN := $(shell $(GO) env GOBIN)
ifeq ($(GOBIN),)
GOBIN := $(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin
endif
export PATH := $(GOBIN):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo none)
# The commit's date, not the build's, so that builds are reproducible.
DATE    ?= $(shell git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)

LDFLAGS := -s -w \
	-X $(PKG)/internal/cli.version=$(VERSION) \
	-X $(PKG)/internal/cli.commit=$(COMMIT) \
	-X $(PKG)/internal/cli.date=$(DATE)

# What the tests and linters need; scripts/install-test-deps.sh installs it.
TEST_DEPS := docker-registry skopeo staticcheck crane cosign
DEPS_CHECK := for d in $(TEST_DEPS); do command -v "$$d" >/dev/null 2>&1 || exit 1; done
# Install the dependencies only when one is missing.
ENSURE_DEPS := ( $(DEPS_CHECK) ) || bash scripts/install-test-deps.sh

COMPLETION_SHELLS := bash:ferry.bash zsh:_ferry fish:ferry.fish powershell:ferry.ps1

.PHONY: build test lint deps deps-check completions bench demo clean help

build: ## build bin/ferry, a static binary
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ferry

test: ## run every test, with the race detector and the interop tests (installs missing test dependencies first)
	@$(ENSURE_DEPS)
	$(GO) test -race -tags interop -timeout 30m ./...

lint: ## gofmt, go vet and staticcheck
	@$(ENSURE_DEPS)
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt: these files need formatting:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet -tags interop ./...
	staticcheck -tags interop ./...

deps: ## install the test dependencies that are missing
	bash scripts/install-test-deps.sh

deps-check: ## fail, naming it, if a test dependency is missing
	@for d in $(TEST_DEPS); do \
		command -v "$$d" >/dev/null 2>&1 || { echo "missing: $$d (run scripts/install-test-deps.sh)" >&2; exit 1; }; \
	done

completions: ## regenerate the shell completion scripts in completions/
	@mkdir -p completions
	@for pair in $(COMPLETION_SHELLS); do \
		sh="$${pair%%:*}"; file="completions/$${pair#*:}"; \
		$(GO) run ./cmd/ferry completion "$$sh" > "$$file.tmp" || { rm -f "$$file.tmp"; exit 1; }; \
		mv "$$file.tmp" "$$file"; \
		echo "$$file"; \
	done

bench: ## benchmarks of copy, serve, mirror, bundle and cache against crane, regctl, regsync, skopeo and docker-registry (docs/benchmarks.md); BENCHFLAGS=-quick for a quick check
	bash scripts/bench.sh $(BENCHFLAGS)

demo: build ## run ferry end to end against an ephemeral local registry
	bash scripts/demo.sh

clean: ## remove build output
	rm -rf bin dist coverage.out coverage.html

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
