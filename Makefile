# Quick start: `make demo` (whole pipeline on synthetic data) and `make test` (the test suite).
# Both create .venv and install requirements on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) dataset_prep.py --synthetic

test: venv
	$(PY) -m pytest

clean:
	rm -rf data/raw/synthetic data/prepared runs figures Exp_images scores.csv predictions.csv results.txt cam_scores.csv
