# The two commands a newcomer needs:  make run   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test setup lint bench docs clean clean-cache

$(BIN)/pm4324: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel  # wheel: ADC plug-ins build in this venv too
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m pm4324.cli.precompile  # so the first `make run` reads within seconds
	touch $@

setup: $(BIN)/pm4324

run: setup  ## run the meter on the simulated building, dashboard at http://127.0.0.1:8080/ (Ctrl-C to stop)
	$(BIN)/pm4324 run --http 127.0.0.1:8080 $(ARGS)

test: setup  ## lint, then the whole test suite
	$(BIN)/ruff check src tests $(wildcard bench examples)
	$(BIN)/pytest

bench: setup  ## speed benchmarks (results go to docs/benchmarks.md by hand)
	$(BIN)/python bench/metering_bench.py

docs: setup  ## regenerate the generated docs (register map, EDS) after editing map.csv
	$(BIN)/python -m pm4324.registers.docs
	$(BIN)/python -m pm4324.protocols.canopen.eds

clean-cache:  ## drop numba's compiled kernels (it misses edits to a kernel's callees in other files)
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-cache
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
