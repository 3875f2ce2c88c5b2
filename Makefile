# morphtune: every target creates or updates .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint proto bench bench-growth bench-sparsity bench-search clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch first, pinned to the local CPU wheel, so no CUDA packages are ever pulled
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/morphtune demo examples/digits-demo.yaml

test: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/morphtune
	$(BIN)/python -m morphtune.service.codegen --check
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/morphtune
	$(BIN)/ruff format --check src tests benchmarks

proto: venv
	$(BIN)/python -m morphtune.service.codegen

bench: venv
	$(BIN)/python benchmarks/trial_overhead.py

bench-growth: venv
	$(BIN)/python benchmarks/growth_flops.py

bench-sparsity: venv
	$(BIN)/python benchmarks/sparsity_table.py

bench-search: venv
	$(BIN)/python benchmarks/search_efficiency.py

clean:
	rm -rf $(VENV) morphtune-results .pytest_cache
