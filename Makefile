# One entry point for people and CI: every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install  ## compress a digits CNN to INT8 and export ONNX
	$(PY) -m squeezer.examples.demo

lint: install
	$(PY) -m ruff check squeezer tests bench
	$(PY) -m ruff format --check squeezer tests bench
	$(PY) -m mypy

test: lint  ## what CI runs
	$(PY) -m pytest -q

bench: install
	$(PY) bench/bench_quantization.py
