# streamtap: every step CI and a new user need lives here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck bench bench-quick bench-peers browser-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "streamtap needs Python 3.12+ (found " + sys.version.split()[0] + ")")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/streamtap demo

# Chromium comes from Debian's package (the browser test never downloads a browser of its own).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "warning: chromium missing and not root; browser tests will be skipped"; fi; }

test: install browser-deps lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests addons dashboard bench migrations
	$(BIN)/ruff format --check src tests addons dashboard bench migrations
	$(BIN)/mypy

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run --full

bench-quick: install
	$(BIN)/python -m bench.run --quick

bench-peers: install
	$(BIN)/python -m bench.run --full --peers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
