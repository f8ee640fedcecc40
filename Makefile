# `make demo` and `make test` each set up .venv when it is missing, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench schema lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[torch,test,demo,sweep]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/qcompile build

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto

bench: $(STAMP)
	$(BIN)/python benchmarks/olive_job.py
	$(BIN)/python benchmarks/resnet50_ort_cpu.py
	$(BIN)/python benchmarks/cached_build.py
	$(BIN)/python benchmarks/calibration_memory.py

lint: $(STAMP)
	$(BIN)/pip install -q ruff
	$(BIN)/ruff check qcompile tests benchmarks

schema: $(STAMP)
	$(BIN)/qcompile schema

clean:
	rm -rf qcompile-out outputs multirun .pytest_cache
