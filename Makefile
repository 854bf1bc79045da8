# duixwatch — the commands the README promises. Every target sets up .venv itself.
#   make demo    the simulator (and, from the daemon issue on, the daemon) on loopback
#   make test    every test
#   make check   format, lint, types, layer contracts

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Real tools the tests drive (design.md §11), from Debian's packages. A missing tool makes its
# tests FAIL, so `make test` installs them (as root, or through sudo).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := prometheus

.PHONY: venv tools demo test check fmt clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "duixwatch needs Python >= 3.11 (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian packages: $(DEBS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(DEBS); }

demo: $(STAMP)
	$(BIN)/duixwatch demo

test: $(STAMP) tools
	$(BIN)/pytest

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
