# `make run` and `make test` set everything up on a fresh clone (Python 3.11, pip reaching PyPI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two installs (sizes: docs/install.md): the runtime (requirements.txt + the package) is all `make run` needs;
# the tests add requirements-dev.txt (test tools, the app's Gradio + Playwright, Ray, Jupyter's kernel) on top.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
OUT ?= outputs/quickstart
# A PyTorch index to take torch/torchvision from first, e.g. PyTorch's CPU-only builds (docs/install.md):
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# pytest-xdist workers for `make test` (each test file stays on one worker: tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: venv venv-dev run test lint bench clean

$(RUN_STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 --index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -r requirements.txt
	# PySceneDetect (shot cuts) without its opencv-python, which would clash with opencv-contrib-python
	$(BIN)/pip install --quiet --no-deps scenedetect==0.7.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

## the runtime environment only; venv-dev: with the test tools and every extra
venv: $(RUN_STAMP)
venv-dev: $(DEV_STAMP)

## the main job: the whole pipeline on the embedded samples (smoke scale), outputs under $(OUT)
run: $(RUN_STAMP)
	$(BIN)/python -m emonet quickstart --output-dir $(OUT)

## the test suite (no GPU, no downloads)
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

## benchmarks (print tables, write JSON under bench/results/)
bench: $(RUN_STAMP)
	mkdir -p bench/results
	$(BIN)/python bench/bench_inference.py --json bench/results/inference.json

clean:
	rm -rf $(VENV) outputs .pytest_cache
