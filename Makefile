# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GPU ?= 0

.PHONY: demo test venv clean bench gpu-check

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is pinned first: here it resolves to the machine's CPU wheel; a range would pull CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/odin demo --out demo_out $(if $(filter 1,$(GPU)),--gpu,)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# Every GPU claim in one call of at most 8 minutes (bench/gpu_check.py). No venv is built: a GPU
# machine's own CUDA torch is used when it has one; missing wheels come from wheels/.
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY)) bench/gpu_check.py

clean:
	rm -rf $(VENV) demo_out
