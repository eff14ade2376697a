# Portcullis — two commands do all set-up on a fresh Debian machine with a Rust toolchain:
#   make run    build (release) and start a demo origin and the gateway on 127.0.0.1:8080
#   make test   fmt check, clippy, and the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Packages the build needs: cmake (zlib-ng for Pingora), the system OpenSSL to link against,
# a C toolchain and pkg-config. The tests also use curl (TLS listener checks) and openssl
# (test certificates); systemd-analyze verifies the unit file when it is available.
# prometheus provides promtool (which checks deploy/monitoring and the live /metrics page) and
# the Prometheus server the monitoring tests start (tests/gateway/monitoring.rs); chromium is
# the real browser of the CORS test (tests/gateway/cors.rs, headless); python3-grpcio is gRPC's
# C-core library, the server and client of the gRPC tests (tests/gateway/grpc.rs); python3-pip
# installs the OPA stand-in's Rego interpreter (below).
BUILD_PACKAGES := cmake pkg-config libssl-dev build-essential perl
TEST_PACKAGES := curl openssl redis-server python3 python3-grpcio python3-pip prometheus chromium
# Node.js runs the real OpenID Provider of the tests (tests/oidc-provider: panva's
# oidc-provider, pinned by its package-lock.json): Debian's nodejs and npm, unless a node and
# an npm are on the PATH already (NodeSource's nodejs carries its own npm, and conflicts with
# Debian's npm package).
NODE_PACKAGES := $(if $(shell command -v node >/dev/null && command -v npm >/dev/null && echo y),,nodejs npm)
OIDC_PROVIDER := tests/oidc-provider
LISTEN ?= 127.0.0.1:8080
CONF ?= conf/portcullis.yaml

.PHONY: help deps test-deps test-system-deps build run test fmt lint layers unit load-test bench clean-run

help:
	@echo "make run        build and run the gateway on $(CONF) with a demo origin"
	@echo "make test       install test dependencies, then fmt, clippy and all tests"
	@echo "make load-test  wrk against the origin, nginx, HAProxy and Portcullis"
	@echo "make bench      criterion micro-benchmarks of the hot paths"

# Install whatever is missing, idempotently.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_PACKAGES))

test-system-deps: deps
	$(call apt_install,$(TEST_PACKAGES) $(NODE_PACKAGES))
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# The provider's npm packages, exactly as locked, from the npm registry; again only when
# node_modules is missing or older than package.json or the lockfile.
$(OIDC_PROVIDER)/node_modules/.installed: $(OIDC_PROVIDER)/package.json $(OIDC_PROVIDER)/package-lock.json | test-system-deps
	cd $(OIDC_PROVIDER) && npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# The OPA stand-in's Rego interpreter (tests/opa: rego-cpp's `regopy` from PyPI, pinned by
# hash), into the project's own directory, never the system's; again only when missing or
# older than the requirements.
OPA_PYLIB := tests/opa/.pylib
$(OPA_PYLIB)/.installed: tests/opa/requirements.txt | test-system-deps
	rm -rf $(OPA_PYLIB)
	/usr/bin/python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes --target $(OPA_PYLIB) -r tests/opa/requirements.txt
	@touch $@

test-deps: test-system-deps $(OIDC_PROVIDER)/node_modules/.installed $(OPA_PYLIB)/.installed

build: deps
	cargo build --release

# The demo: two echo origins, the gateway on the bundled conf/portcullis.yaml, and the tour
# (conf/demo/tour.sh) with freshly minted demo tokens and the demo API key to paste.
run: build
	@mkdir -p run
	@echo "starting demo origins (portcullis echo) on 127.0.0.1:9000 and 127.0.0.1:9001"
	@./target/release/portcullis echo --listen 127.0.0.1:9000 & echo $$! > run/echo-9000.pid
	@./target/release/portcullis echo --listen 127.0.0.1:9001 & echo $$! > run/echo-9001.pid
	@trap 'kill $$(cat run/echo-9000.pid run/echo-9001.pid) 2>/dev/null' EXIT; \
	echo; echo "Portcullis on http://$(LISTEN), admin on http://127.0.0.1:9901."; echo; \
	conf/demo/tour.sh ./target/release/portcullis $(LISTEN) 127.0.0.1:9901; echo; \
	./target/release/portcullis run -c $(CONF)

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --all-targets -- -D warnings

# The house plan: forbidden imports between modules and import circles (docs/architecture.md),
# a self-test that adds each forbidden arrow and expects it caught, and docs/threats.md
# checked against the tests it names.
layers:
	python3 .ci/layers.py
	python3 .ci/layers.py --self-test
	python3 .ci/threats.py

unit:
	cargo nextest run --no-fail-fast
	@if command -v systemd-analyze >/dev/null; then systemd/verify.sh; else echo "systemd-analyze not available: unit file not verified"; fi

test: test-deps fmt lint layers unit

load-test: build
	load-tests/run.sh

bench:
	cargo bench --bench hot_paths
