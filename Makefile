# skyfit: `make demo` (set-up + the main job), `make test` (set-up + the test suite),
# `make docs` (the documentation site into site/, warnings are errors) and `make bench`
# (set-up + the benchmarks' peer codes, the `bench` extra, + the benchmarks).
PYTHON ?= python3
OUT ?= skyfit-demo

.PHONY: setup demo test bench lint docs

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[dev,docs]"

demo: setup
	$(PYTHON) -m skyfit demo --out $(OUT)

test: setup
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 --durations=15 tests

bench: setup
	$(PYTHON) -m pip install -q -e ".[dev,bench]"
	$(PYTHON) benchmarks/run.py

docs: setup
	$(PYTHON) -m mkdocs build --strict --site-dir site

lint:
	$(PYTHON) -m ruff check src tests benchmarks
