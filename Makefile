# `make run` and `make test` set everything up on a fresh clone (Python 3.11, pip reaching PyPI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= outputs/quickstart

.PHONY: venv run test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

## the main job: the whole pipeline on the embedded samples (smoke scale), outputs under $(OUT)
run: venv
	$(BIN)/python -m emonet quickstart --output-dir $(OUT)

## the test suite (no GPU, no downloads)
test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

## benchmarks (print tables, write JSON under bench/results/)
bench: venv
	mkdir -p bench/results
	$(BIN)/python bench/bench_inference.py --json bench/results/inference.json

clean:
	rm -rf $(VENV) outputs .pytest_cache
