# Berth: `make demo` runs the local demo, `make test` the whole suite.
SHELL := bash
GO    ?= go
BIN   := $(CURDIR)/bin
export CGO_ENABLED ?= 0

.PHONY: all build coredns exporter proxy berth consul deps test test-faults fuzz bench demo image lint clean

all: build

build: coredns exporter proxy berth

coredns:
	$(GO) build -o $(BIN)/coredns ./plugin/coredns

exporter:
	$(GO) build -o $(BIN)/berth-exporter ./exporter/cmd/berth-exporter

proxy:
	$(GO) build -o $(BIN)/berth-proxy ./proxy/cmd/berth-proxy

berth:
	$(GO) build -o $(BIN)/berth ./ctl/cmd/berth

# Consul has no Debian package: build the pinned release once into a cache.
consul:
	@bash hack/get-consul.sh >/dev/null

# The Debian packages the tests run (BIND, delv, ...), when missing.
deps:
	@bash hack/deps.sh

# The whole suite against the real Consul, Docker Engine and CoreDNS, in
# phases (hack/test.sh): the packages' unit, integration and end-to-end
# tests, the fuzz targets briefly, then the fault scenarios on their own (they
# time outages and must not share the two cores with the other packages),
# with the load scenario cut to a minute. Each phase runs even when an earlier
# one failed; the target fails at the end, after a one-line summary per
# phase. Tests that need a missing part fail under CI.
test: build consul deps
	FAULT_LOAD=60s bash hack/test.sh

fuzz:
	bash hack/fuzz.sh 20

# The fault scenarios, with the five-minute load scenario.
FAULT_LOAD ?= 5m
test-faults: build consul deps
	BERTH_CONSUL="$$(bash hack/get-consul.sh)" BERTH_COREDNS=$(BIN)/coredns \
	BERTH_FAULT_LOAD_DURATION=$(FAULT_LOAD) \
	  $(GO) test -count=1 -timeout 30m -run 'Fault' -v ./faults/...

bench: build consul
	bash hack/bench.sh

# A million instances (10,000 hosts x 100, issue 11): long, and most of the
# machine's memory; saves bench/large.json, which make bench renders.
.PHONY: bench-large
bench-large: build consul
	bash hack/bench.sh -large

demo: build consul
	bash hack/demo.sh

image: exporter coredns
	bash hack/image.sh

# staticcheck, pinned (module v0.8.2 is release 2026.2.2), from the Go module
# proxy, built once into Go's cache.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	bash hack/check-waits.sh

clean:
	rm -rf $(BIN)
