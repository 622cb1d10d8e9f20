# Two entry points for a fresh machine: `make demo` and `make test`.
# TORCH_SPEC selects the PyTorch build (default: the CPU wheel available here).
# A GPU user runs e.g. `make test TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"`.
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
WHISPER_SPEC ?= openai-whisper==20250625
EXTRAS ?= weights,synth,prepare,serve,parquet,test
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-av demo-multi demo-tag test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# openai-whisper goes in with --no-deps (on Linux x86_64 it requires triton, ~1 GB installed and useless on
# CPU); every other requirement of pyproject.toml (ours include openai-whisper's real ones) is installed by
# name, then the package itself with --no-deps.  A plain `pip install .` works too, with triton.
$(STAMP): $(BIN)/python pyproject.toml tools/pyproject_deps.py
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q --no-deps $(WHISPER_SPEC)
	$(BIN)/python tools/pyproject_deps.py --extras "$(EXTRAS)" --exclude openai-whisper > $(VENV)/requirements.txt
	$(BIN)/pip install -q -r $(VENV)/requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m whisper_flamingo.cli demo --out demo_out

demo-av: $(STAMP)
	$(BIN)/python -m whisper_flamingo.cli demo-av --out demo_out_av

demo-multi: $(STAMP)
	$(BIN)/python -m whisper_flamingo.cli demo-multi --out demo_out_multi

demo-tag: $(STAMP)
	$(BIN)/python -m whisper_flamingo.cli demo-tag --out demo_out_tag

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --timeout=600 tests

# Both benchmarks with their defaults (decode speed on ../shared/data/jfk.flac, training throughput on
# synthetic batches); extra arguments: make bench DECODE_BENCH_ARGS="--muavic-root demo_out/corpus".
DECODE_BENCH_ARGS ?=
TRAIN_BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/decode_speed.py $(DECODE_BENCH_ARGS)
	$(BIN)/python benchmarks/train_throughput.py $(TRAIN_BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf demo_out demo_out_av demo_out_tag demo_out_multi .pytest_cache
