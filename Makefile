# framefleet: `make run` and `make test` are the two commands; both start with `make setup`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.framefleet-installed
# checkov (Kubernetes manifest scanning) pins an older `packaging`: its own venv.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
CHECKOV := 3.3.30
# ffmpeg for the encodes; prometheus (and its promtool) for the metrics tests; chromium
# (and a font) for the status page's browser tests (Playwright drives it: no download).
APT_PACKAGES := ffmpeg python3-venv prometheus chromium fonts-liberation
# Empty: the one default data dir that `serve` and the client share
# ($XDG_DATA_HOME/framefleet or ~/.local/share/framefleet); `make run DATA_DIR=…` to move it.
DATA_DIR ?=
DATA_DIR_OPT := $(if $(DATA_DIR),--data-dir $(DATA_DIR))

export RAY_USAGE_STATS_ENABLED = 0

.PHONY: setup system-deps run demo test test-fast test-chaos test-gpu lint typecheck pytest bench lock lock-tools clean

setup: system-deps $(STAMP) $(TOOLS_STAMP)
	@# Byte-compiled now (the editable install does not, nor does a shell that sets
	@# PYTHONDONTWRITEBYTECODE): a one-shot command then imports, not compiles, the engine.
	@$(BIN)/python -m compileall -q -j 0 cluster api >/dev/null

# ffmpeg, prometheus and chromium from Debian when missing; apt-get needs root, otherwise say what to run.
system-deps:
	@missing=""; \
	for tool in ffmpeg ffprobe prometheus promtool chromium; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "setup: installing $(APT_PACKAGES) with apt-get (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "setup: missing$$missing; install them with: sudo apt-get install $(APT_PACKAGES)" >&2; exit 1; \
	  fi; \
	fi
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "setup: framefleet needs Python 3.11 or newer; found " + sys.version.split()[0])'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

# The gateway on http://127.0.0.1:8000 (docs at /docs) with a local cluster; media
# under <data dir>/media unless FRAMEFLEET_MEDIA_ROOTS says otherwise.
run: setup
	$(BIN)/framefleet serve $(DATA_DIR_OPT)

demo: setup
	$(BIN)/framefleet demo $(DATA_DIR_OPT)

test: setup lint typecheck pytest

# The unit tests alone (tests/unit: no Ray, no servers, no ffmpeg); under a minute.
test-fast: setup lint typecheck
	$(BIN)/pytest tests/unit

lint:
	$(BIN)/ruff format --check cluster api tests bench
	$(BIN)/ruff check cluster api tests bench

typecheck:
	$(BIN)/mypy

# Unit tests first (they fail in seconds), then the integration tests on real parts.
pytest:
	$(BIN)/pytest tests/unit
	FRAMEFLEET_TEST_REQUIRE_TOOLS=1 $(BIN)/pytest -m "not gpu" tests/integration

# The chaos test alone, CHAOS_RUNS times in a row (it also runs once in `make test`);
# each run prints its figures. CHAOS_SEED=N replays one run's choice of victims.
CHAOS_RUNS ?= 5
test-chaos: setup
	@for i in $$(seq $(CHAOS_RUNS)); do \
	  echo "chaos run $$i of $(CHAOS_RUNS)"; \
	  $(BIN)/pytest -m chaos -s -q -p no:cacheprovider tests/integration/cluster/test_chaos.py || exit 1; \
	done

# Needs an NVIDIA driver: NVML inventory and NVENC detection for real.
test-gpu: setup
	FRAMEFLEET_TEST_REQUIRE_GPU=1 $(BIN)/pytest -m gpu -s tests/integration/cluster/test_gpus.py

bench: setup
	$(BIN)/python bench/all.py $(BENCH_ARGS)

$(TOOLS_STAMP): requirements-tools.lock
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q -r requirements-tools.lock
	@touch $(TOOLS_STAMP)

# Re-pin every package after a change to pyproject.toml's dependencies.
lock:
	rm -rf /tmp/framefleet-lock && $(PYTHON) -m venv /tmp/framefleet-lock
	/tmp/framefleet-lock/bin/pip install -q '.[dev]'
	{ echo '# Exact versions of every package in .venv, used as constraints by `make setup`.'; \
	  echo '# Regenerate with `make lock` after changing pyproject.toml.'; \
	  /tmp/framefleet-lock/bin/pip freeze --exclude framefleet; } > requirements.lock

lock-tools:
	rm -rf /tmp/framefleet-tools && $(PYTHON) -m venv /tmp/framefleet-tools
	/tmp/framefleet-tools/bin/pip install -q checkov==$(CHECKOV)
	{ echo '# Exact versions for .venv-tools (checkov, which needs an older `packaging` than .venv).'; \
	  echo '# Regenerate with `make lock-tools`.'; \
	  /tmp/framefleet-tools/bin/pip freeze; } > requirements-tools.lock

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache *.egg-info
