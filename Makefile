# Quick start: `make demo` (the whole pipeline on synthetic data) and `make test` (the test suite).
# Both create .venv and install the requirements on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Demo settings: small enough for the whole grid (3 training sets x 5 models, each tested on 3 sets) to run in
# minutes on a 2-core CPU. `make demo WEIGHTS=imagenet` uses ImageNet weights where they can be downloaded.
DEMO_DIR ?= demo
DEMO_DATA ?= data/synthetic_prepared
DEMO_CHIPS ?= 400
WEIGHTS ?= none
DEMO_GRID ?= --img-size 48 --epochs 4 --batch-size 32

.PHONY: demo test venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) dataset_prep.py --synthetic --synthetic-chips $(DEMO_CHIPS) --output-dir $(DEMO_DATA)
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID)
	$(PY) grad_cams.py --run-dir $(DEMO_DIR) --data-dir $(DEMO_DATA) --exp-dir $(DEMO_DIR)/Exp_images --per-class 5
	$(PY) report.py --output-dir $(DEMO_DIR) --data-dir $(DEMO_DATA) --exp-dir $(DEMO_DIR)/Exp_images

test: venv
	$(PY) -m pytest

clean:
	rm -rf $(DEMO_DIR) $(DEMO_DATA) data/raw/synthetic
