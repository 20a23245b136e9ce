# make train | make test | make data | make clean-venv
# TORCH pins the torch/torchaudio pair known to work on CPU machines like CI's; override for CUDA, e.g.
#   make train TORCH="torch==2.9.1 torchaudio==2.9.1"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchaudio==2.11.0
ARGS ?=
PY := $(VENV)/bin/python

.PHONY: setup data train test bench clean-venv

# Idempotent: the stamp is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

data: setup
	$(PY) scripts/make_synthetic.py --out data/synthetic

train: data
	$(PY) scripts/train.py $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

clean-venv:
	rm -rf $(VENV)
