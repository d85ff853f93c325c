# streamtap: every step CI and a new user need lives here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install native demo test lint typecheck bench bench-quick bench-peers browser-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "streamtap needs Python 3.12+ (found " + sys.version.split()[0] + ")")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The worker's hot modules compiled with mypyc into build/native (streamtap.native): ~25 s when a source
# changed, nothing otherwise. Without a C compiler streamtap runs them as pure Python, only slower.
native: install
	@$(BIN)/python -c 'from streamtap import native; raise SystemExit(native.main(["build"]))' \
	  || echo "warning: the compiled modules could not be built; streamtap runs pure Python"

demo: native
	$(BIN)/streamtap demo

# Chromium comes from Debian's package (the browser test never downloads a browser of its own).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "warning: chromium missing and not root; browser tests will be skipped"; fi; }

# The suite runs on the compiled modules; the hot path's unit tests run again on the pure-Python ones.
PURE_TESTS := tests/test_decoding.py tests/test_sse.py tests/test_semantics.py tests/test_chat_corpus.py \
  tests/test_chat_shapes.py tests/test_anthropic_api.py tests/test_responses_api.py tests/test_interpreters.py \
  tests/test_event_log.py tests/test_tap_unit.py tests/test_pipeline.py tests/test_fuzz.py tests/test_native.py
test: native browser-deps lint
	$(BIN)/python -m pytest -q
	STREAMTAP_NATIVE=0 $(BIN)/python -m pytest -q $(PURE_TESTS)

lint: install
	$(BIN)/ruff check src tests addons dashboard bench migrations
	$(BIN)/ruff format --check src tests addons dashboard bench migrations
	$(BIN)/mypy

typecheck: install
	$(BIN)/mypy

bench: native
	$(BIN)/python -m bench.run --full

bench-quick: native
	$(BIN)/python -m bench.run --quick

bench-peers: native
	$(BIN)/python -m bench.run --full --peers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
