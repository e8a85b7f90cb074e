# GroupQwen: `make run` starts the gateway, `make test` runs the whole suite. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A portable llama.cpp build: a wheel built for this exact CPU can die with "illegal instruction" elsewhere.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: run test lint models setup clean bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[llamacpp,dev]'
	touch $@

models: setup
	$(BIN)/groupqwen models fetch

run: setup models
	$(BIN)/groupqwen serve

lint: setup
	$(BIN)/ruff check groupqwen tests bench
	$(BIN)/ruff format --check groupqwen tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup models lint
	$(BIN)/pytest

bench: setup models
	$(BIN)/python bench/stream.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
