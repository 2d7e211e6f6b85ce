# Quick start: `make demo` (the whole pipeline on synthetic data), `make test` (lint and the test suite) and
# `make smoke` (the whole pipeline on the smallest synthetic data, in about a minute).
# Each creates .venv and installs the requirements on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Demo settings: small enough for the whole grid (3 training sets x 5 models at the study's learning rate, and the
# two cheap models at a second rate so that the tables choose one on validation, each tested on 3 sets) to run in
# minutes on a 2-core CPU. `make demo WEIGHTS=imagenet` uses ImageNet weights where they can be downloaded.
DEMO_DIR ?= demo
DEMO_DATA ?= data/synthetic_prepared
DEMO_CHIPS ?= 400
WEIGHTS ?= none
DEMO_GRID ?= --img-size 48 --epochs 4 --batch-size 32 --seeds 42
DEMO_LR_MODELS ?= cnn,fine_resnet
DEMO_LRS ?= 0.001,0.0001

# Smoke settings: the generator's per-class floor (--synthetic-chips 1), 32 px, one epoch; every stage runs.
SMOKE_DIR ?= smoke
SMOKE_DATA ?= $(SMOKE_DIR)/prepared
SMOKE_GRID ?= --img-size 32 --epochs 1 --batch-size 32 --weights none --models cnn,fine_resnet

.PHONY: demo test smoke lint venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) dataset_prep.py --synthetic --synthetic-chips $(DEMO_CHIPS) --output-dir $(DEMO_DATA)
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID)
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID) \
		--models $(DEMO_LR_MODELS) --lr $(DEMO_LRS)
	$(PY) grad_cams.py --output-dir $(DEMO_DIR) --data-dir $(DEMO_DATA) --per-class 5
	$(PY) report.py --output-dir $(DEMO_DIR) --data-dir $(DEMO_DATA)

smoke: venv
	rm -rf $(SMOKE_DIR)
	$(PY) dataset_prep.py --synthetic --synthetic-chips 1 --raw-dir $(SMOKE_DIR)/raw --output-dir $(SMOKE_DATA)
	$(PY) test_models.py --data-dir $(SMOKE_DATA) --output-dir $(SMOKE_DIR) $(SMOKE_GRID)
	$(PY) grad_cams.py --output-dir $(SMOKE_DIR) --data-dir $(SMOKE_DATA) --per-class 2
	$(PY) report.py --output-dir $(SMOKE_DIR) --data-dir $(SMOKE_DATA)

lint: venv
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(DEMO_DIR) $(DEMO_DATA) $(SMOKE_DIR) data/raw/synthetic
