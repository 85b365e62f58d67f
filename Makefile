# One entry point for people and CI: every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# the torch CI runs (pyproject admits a range): the CPU build, which pip takes from the local file here
TORCH ?= 2.13.0
# where the CPU wheels lie on our machines; elsewhere pass the index: make lock TORCH_CPU_WHEELS=https://download.pytorch.org/whl/cpu/torch/
TORCH_CPU_WHEELS ?= /opt/wheels

.PHONY: install system-deps demo demo-library serve test lint bench zoo docs lock
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH)"  # first: a range alone would make pip pick the newest (a CUDA build)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install  ## the service on the embedded defaults: a digits CNN in, a verified INT8 ONNX out
	$(PY) -m squeezer.examples.service_demo

demo-library: install  ## the same compression with the library only, in-process
	$(PY) -m squeezer.examples.demo

serve: install  ## the API and one worker on the embedded defaults, until Ctrl-C
	$(VENV)/bin/squeezer serve

# the servers the service tests start for real (Redis, PostgreSQL), the compose file's validator and the
# browser the dashboard tests drive (Debian's chromium; never `playwright install`); installed only when missing
system-deps:
	@if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| ! { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; } \
		|| ! test -x /usr/bin/chromium; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends redis-server postgresql docker-compose chromium; \
	fi

lint: install
	$(PY) -m ruff check squeezer tests bench docs/gen
	$(PY) -m ruff format --check squeezer tests bench docs/gen
	$(PY) -m mypy
	$(VENV)/bin/lint-imports  # the layering contracts in pyproject.toml ([tool.importlinter])

test: lint docs system-deps  ## what CI runs (the docs build takes a few seconds)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15  # the 15 slowest tests, in CI's output too

bench: install
	$(PY) bench/bench_quantization.py

zoo: install  ## the full model-zoo matrix (bench/results/zoo.json and a table); about an hour on 2 cores
	$(PY) bench/bench_zoo.py

docs: install  ## the documentation site into site/: the generated references first, then a strict build
	PYTHONPATH=. $(PY) docs/gen/reference.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

lock: install  ## docker/requirements.lock: the Docker image's exact, hash-checked dependencies (torch's CPU build)
	$(VENV)/bin/uv pip compile pyproject.toml --extra service --extra openvino --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --generate-hashes --override docker/torch-cpu.txt \
		--find-links $(TORCH_CPU_WHEELS) --no-header --quiet -o docker/requirements.lock
