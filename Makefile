# Quick start: `make demo` (the whole pipeline on synthetic data), `make test` (lint and the test suite) and
# `make smoke` (the whole pipeline on the smallest synthetic data, in about 1.5 minutes).
# Each creates .venv and installs the requirements on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Demo settings: small enough for the whole pipeline to run in under 15 minutes on a 2-core CPU, and every question
# the report answers to have data: the study's five models at its learning rate and one seed (the heavy ones cannot
# take more here), trained on all three sets; the custom CNN at two learning rates (chosen on validation) and both
# cheap models at three seeds (intervals) and again with a class-weighted loss (imbalance), on the two datasets;
# every cell tested on the three test sets (cross-sensor), with the label-free adaptations between FUSAR-Ship and
# OpenSARShip; the cheap models again on 10 m pixels, with and without clutter radiometry, two seeds (the
# cross-sensor comparison); the baselines beside them on every input; the cheap models at three seeds on the stacked
# dual-pol set (co + cross, dataset_prep.py --pol stack: the co sets are those of a co run), against co. Three
# epochs. WEIGHTS=auto: ImageNet weights where they are in the torch cache or can be downloaded, random ones otherwise
# (offline, as here); the records and the report say which each model got. `make demo WEIGHTS=none` never looks for
# them.
DEMO_DIR ?= demo
DEMO_DATA ?= data/synthetic_prepared
DEMO_CHIPS ?= 256
WEIGHTS ?= auto
DEMO_GRID ?= --img-size 48 --epochs 3 --batch-size 32
DEMO_CHEAP ?= cnn,fine_resnet
DEMO_LRS ?= 0.001,0.0001
DEMO_SEEDS ?= 0,1,2
DEMO_SENSORS ?= fusar,opensarship
DEMO_INPUTS ?= m10,m10-clutter
DEMO_CROSS_SEEDS ?= 0,1

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
	$(PY) dataset_prep.py --synthetic --synthetic-chips $(DEMO_CHIPS) --output-dir $(DEMO_DATA) --pol stack
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID) --seeds 0
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID) \
		--models cnn --datasets $(DEMO_SENSORS) --lr $(DEMO_LRS) --seeds $(DEMO_SEEDS)
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID) \
		--models $(DEMO_CHEAP) --datasets $(DEMO_SENSORS) --imbalance none,weighted --seeds $(DEMO_SEEDS)
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID) \
		--models $(DEMO_CHEAP) --datasets $(DEMO_SENSORS) --inputs $(DEMO_INPUTS) --seeds $(DEMO_CROSS_SEEDS)
	$(PY) test_models.py --data-dir $(DEMO_DATA) --output-dir $(DEMO_DIR) --weights $(WEIGHTS) $(DEMO_GRID) \
		--models $(DEMO_CHEAP) --datasets opensarship-stack --seeds $(DEMO_SEEDS)
	$(PY) grad_cams.py --output-dir $(DEMO_DIR) --data-dir $(DEMO_DATA) --per-class 5 --road-chips 2
	$(PY) report.py --output-dir $(DEMO_DIR) --data-dir $(DEMO_DATA)

smoke: venv
	rm -rf $(SMOKE_DIR)
	$(PY) dataset_prep.py --synthetic --synthetic-chips 1 --raw-dir $(SMOKE_DIR)/raw --output-dir $(SMOKE_DATA) \
		--pol stack
	$(PY) test_models.py --data-dir $(SMOKE_DATA) --output-dir $(SMOKE_DIR) $(SMOKE_GRID)
	$(PY) test_models.py --data-dir $(SMOKE_DATA) --output-dir $(SMOKE_DIR) $(SMOKE_GRID) --datasets opensarship-stack
	$(PY) grad_cams.py --output-dir $(SMOKE_DIR) --data-dir $(SMOKE_DATA) --per-class 2
	$(PY) report.py --output-dir $(SMOKE_DIR) --data-dir $(SMOKE_DATA)

lint: venv
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(DEMO_DIR) $(DEMO_DATA) $(SMOKE_DIR) data/raw/synthetic
