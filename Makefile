# Two entry points that set themselves up on a fresh machine:
#   make demo   - generate a small synthetic corpus and run the whole pipeline on it (CPU, < 10 min)
#   make test   - run the test suite (ruff + pytest)
# CUDA users: create .venv and install the torch build for your CUDA first; `make` keeps an installed torch.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch that this project is tested with (a local wheel on our CI machines).
TORCH_SPEC ?= torch==2.13.0
DEMO   ?= demo_out

.PHONY: help install test lint demo clean-demo bench

help:
	@echo "make demo        end-to-end demo on a generated corpus (sets up $(VENV) first)"
	@echo "make test        ruff + the full test suite (sets up $(VENV) first)"
	@echo "make bench       speed benchmarks (bench/*.py; prints ratios vs baselines)"
	@echo "make clean-demo  remove the demo outputs ($(DEMO)/)"

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check .

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist worksteal

bench: install
	$(PY) bench/bench_evaluate.py
	$(PY) bench/bench_preprocess.py
	$(PY) bench/bench_train.py

demo: install
	$(PY) -m engine.demo --out $(DEMO)

clean-demo:
	rm -rf $(DEMO)
