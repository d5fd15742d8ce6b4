# The README's commands. Each target creates .venv when it is missing, so a
# fresh clone needs only Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test lint bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[aws,test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-test
	$(BIN)/pip install -q -e '.[aws,test,bench]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/statekeeper serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Benchmarks: sizes come from BENCH_* variables (see bench/README.md); results
# and charts are written to bench/RESULTS.md and bench/*.png.
bench: $(VENV)/.installed-test $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Reliability tests at full size; their figures are added to bench/RESULTS.md.
soak: $(VENV)/.installed-test $(VENV)/.installed-bench
	STATEKEEPER_SOAK=1 STATEKEEPER_RELIABILITY_OUT=bench/results/reliability.json \
		$(BIN)/python -m pytest -p no:cacheprovider -q --timeout=3600 -rA tests/reliability $(PYTEST_ARGS)
	$(BIN)/python bench/run.py report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
