# egressd — build, test and release targets. `make help` lists them.
#
# The README's two commands are `make demo` and `make test`. Each target that
# needs Debian packages runs scripts/prereqs/prereqs.sh first, for the
# purposes of scripts/prereqs/packages.txt it needs: silent when everything
# is there; as root with apt-get it installs what is missing, otherwise it
# names the missing tools, their packages and the install command, and
# stops. CI runs `.ci/run`, which checks through the same script and list,
# then calls `make lint` and `make test`.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
BIN       := bin
DIST      := dist
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Reproducible builds: no paths, no build id, no VCS stamping; the version is
# the only thing that differs between two builds of one commit.
LDFLAGS   := -s -w -buildid= -X main.version=$(VERSION)
GOBUILD   := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
# The default run measures lever 1 of issue 15 too (syn-queued: every SYN queued)
# and profiles egressd (-perf) for BENCHMARKS.md's breakdown of its CPU.
BENCHLAB_FLAGS ?= -json $(BIN)/bench-lab.json -md BENCHMARKS.md -svg BENCHMARKS.svg -perf $(BIN)/perf \
	-scenarios plain,egressd,squid,nginx,syn-queued -variant 'syn-queued=--no-syn-log EGRESSD_SYN_LOG_ENABLED=false'
FILES      = git ls-files --cached --others --exclude-standard
PREREQS   := ./scripts/prereqs/prereqs.sh
BUILD      = $(GOBUILD) -o $(BIN)/egressd ./cmd/egressd
SCRIPTS    = $(shell $(FILES) '*.sh' .ci/run)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{ printf "  %-10s %s\n", $$1, $$2 }'

.PHONY: build
build: ## build bin/egressd for this machine
	@$(PREREQS) build
	$(BUILD)

.PHONY: demo
demo: ## as root: build the lab, run egressd on the example policy, show allowed and denied flows, tear down (missing packages installed first)
	@$(PREREQS) build lab
	$(BUILD)
	$(GO) run ./test/demo -egressd $(BIN)/egressd

.PHONY: test
test: ## unit, fuzz-seed and lab tests (-race); as root, missing packages installed first and the lab tests run; under CI=true a skip fails
	@$(PREREQS) build lab test deploy
	./scripts/gotest.sh -race -count=1 ./...
	@# The race detector's sync.Pool drops pooled buffers on purpose, so the
	@# allocation tests of the hot paths run again without it.
	./scripts/gotest.sh -count=1 -run 'Allocs' ./pkg/...

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, shellcheck
	@$(PREREQS) build lint
	@out=$$(gofmt -l $$($(FILES) '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	shellcheck $(SCRIPTS)

.PHONY: fmt
fmt: ## gofmt -w every Go file
	gofmt -w $$($(FILES) '*.go')

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	./scripts/fuzz.sh $(FUZZTIME)

.PHONY: bench
bench: ## Go benchmarks (allocs reported); BENCHTIME to change the run length
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

.PHONY: bench-lab
bench-lab: ## TLS conn/s, handshake latency and a long flow in the lab: plain NAT vs egressd, Squid, nginx, written to BENCHMARKS.md; then through a Gateway Load Balancer (root, peers installed first; BENCHLAB_FLAGS)
	@$(PREREQS) $(strip build lab bench $(if $(findstring -perf,$(BENCHLAB_FLAGS)),profile))
	$(GO) build -o $(BIN)/benchlab ./test/bench
	$(BIN)/benchlab $(BENCHLAB_FLAGS)
	$(GO) test -run '^$$' -bench GWLB -benchtime 1x ./test/gwlblab

.PHONY: dist
dist: ## release tarballs for linux/amd64 and linux/arm64 (binary, scripts, units, config, policies) with SHA256SUMS
	@mkdir -p $(DIST)/.build
	for arch in amd64 arm64; do \
		GOOS=linux GOARCH=$$arch $(GOBUILD) -o $(DIST)/.build/egressd-linux-$$arch ./cmd/egressd; \
	done
	./deploy/dist.sh $(DIST) $(VERSION) amd64=$(DIST)/.build/egressd-linux-amd64 arm64=$(DIST)/.build/egressd-linux-arm64

.PHONY: ssm-doc
ssm-doc: ## regenerate deploy/ssm/egressd-push-policy.json from its shell script
	$(GO) run ./deploy/cmd/ssmdoc deploy/ssm/egressd-push-policy.sh deploy/ssm/egressd-push-policy.json

.PHONY: deploy-check
deploy-check: ## the deploy files alone: packer fmt/validate (offline), HCL checks, systemd-analyze, SSM document
	@$(PREREQS) build deploy
	./scripts/gotest.sh -count=1 -run 'TestPacker|TestTerraform|TestSystemdUnits|TestSSMDocument|TestSSMParameter' ./deploy/

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN) $(DIST)
