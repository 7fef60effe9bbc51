# TempReg-Net in Caffe. `make demo` runs the main job, `make test` the tests; both set up
# everything they need (Debian packages, the venv, Caffe) on first use.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
GPU         ?= 0
CAFFE_SRC   ?=
export GPU CAFFE_SRC

# `make train` settings
DATA    ?= data/prepared
FOLD    ?= 0
VARIANT ?= tempreg
CONFIG  ?= small
ITERS   ?= 2000

.PHONY: help venv caffe gpu-bundle prototxt test test-fast demo bench clean train fetch-weights synthetic \
        acdc cross-dataset

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed  ## create .venv with the pinned Python packages and this project

# Caffe lives in a cache outside the clone (tools/caffe/build_caffe.sh prints where); the
# venv gets a .pth for pycaffe and a `caffe` wrapper whose Python layers see the venv.
caffe: venv  ## build BVLC Caffe once (cached) and link it into .venv (GPU=1: the CUDA 13 build)
	prefix=$$(tools/caffe/build_caffe.sh $(abspath $(PY))); \
	$(PY) -m tools.caffe_link "$$prefix"

# A GPU machine without compiler or network: the CUDA build for its Python 3.12 and what it needs,
# packed into device-bundle/ for tools/device_check.sh (docs/caffe.md, "Running on a GPU machine").
BUNDLE_PYTHON ?= python3.12
gpu-bundle: venv  ## pack the CUDA 13 Caffe for a GPU machine's Python 3.12: make gpu-bundle BUNDLE_PYTHON=...
	tools/caffe/gpu_bundle.sh $(BUNDLE_PYTHON)

prototxt: caffe  ## regenerate prototxt/ from models/
	$(PY) -m models.generate

demo: caffe  ## the main job: synthetic cohort -> prepare -> train 3 variants x 4 folds -> Table 1 in results/
	$(PY) -m tools.demo

test: caffe  ## run the test suite
	$(PY) -m pytest -q

test-fast: caffe  ## the tests without the slow training ones
	$(PY) -m pytest -q -m "not slow"

synthetic: venv  ## write the synthetic DICOM cohort to data/synthetic
	$(PY) -m data_prep.synthetic data/synthetic --patients 24 --seed 0 --format dicom

train: caffe  ## train one variant: make train DATA=data/prepared FOLD=0 VARIANT=tempreg CONFIG=small ITERS=2000 [WEIGHTS=...]
	$(PY) -m tools.train --data $(DATA) --fold $(FOLD) --variant $(VARIANT) --config $(CONFIG) --iters $(ITERS) \
	  $(if $(WEIGHTS),--weights $(WEIGHTS),$(if $(filter zf,$(CONFIG)),--no-weights,))

fetch-weights: caffe  ## download the ImageNet ZF model (md5-checked) into data/imagenet/ (FROM=local file)
	$(PY) -m tools.fetch_imagenet_zf $(if $(FROM),--from $(FROM),)

bench: caffe  ## print speed figures: nets (zf, small, small96) and DICOM -> HDF5 preparation
	$(PY) -m tools.bench_net
	$(PY) -m tools.bench_prepare

# Real data (README, "Results on public data"). The small net from scratch, at the ACDC copy's
# native resolution: config small96 crops 88 px from frames prepared at REAL_PX = its stored_size.
ACDC       ?= ../shared/data/acdc
SUNNYBROOK ?= ../shared/data/sunnybrook
REAL_ITERS ?= 3000
REAL_CONFIG ?= small96
REAL_PX    ?= 96
MODELS     ?= $(HOME)/tempregnet-models
STAMP      := $(shell date +%Y%m%d-%H%M%S)

# Both: the contrast and motion inputs and the systole warp that make the nets read ES from the
# images, rotation, zoom and grey-value augmentation for 50 patients (README, Deviations 16-20),
# and a wider head (fc 256, q 128, LSTM 128) that the augmented data can use.
# ACDC starts at ED (49 of 50 patients): the paper's setting on top, Eq. 4 verbatim, a one-pass
# LSTM and ED at the curve's peak. Cross-dataset tests on Sunnybrook, whose ED lies near the end:
# the cycle setting (the defaults).
REAL_SET   ?= input_contrast=true input_motion=true train_warp=0.4 train_rotate=15 train_zoom=0.15 \
              train_gamma=0.3 fc_width=256 feature_dim=128 lstm_hidden=128
ACDC_SET   ?= lstm_cycles=1 train_roll=false
ACDC_DECODER ?= fit_es
# The final model, outside the repository; its name changes with its settings, so an older model
# is never taken for this one.
FINAL      ?= $(MODELS)/acdc_$(REAL_CONFIG)_wide_tempreg_contrast_motion_warp_augment
ACDC_PAPER := data/acdc-paper-$(REAL_PX)
ACDC_CYCLE := data/acdc-$(REAL_PX)
SUNNY      := data/sunnybrook-$(REAL_PX)

$(ACDC_PAPER)/sequences.h5:
	$(PY) -m data_prep.prepare --source acdc $(ACDC) $(ACDC_PAPER) --size $(REAL_PX) --label paper

$(ACDC_CYCLE)/sequences.h5:
	$(PY) -m data_prep.prepare --source acdc $(ACDC) $(ACDC_CYCLE) --size $(REAL_PX)

# Sunnybrook frames show ~350 mm, ACDC's crop ~140 mm: keep the central 0.4 to match.
$(SUNNY)/sequences.h5:
	$(PY) -m data_prep.prepare --source sunnybrook $(SUNNYBROOK) $(SUNNY) --size $(REAL_PX) --roi 0.4

acdc: caffe $(ACDC_PAPER)/sequences.h5  ## Table 1 on ACDC, patient-level 4-fold CV: make acdc ACDC=<folder>
	$(PY) -m tools.table1 --data $(ACDC_PAPER) --config $(REAL_CONFIG) --iters $(REAL_ITERS) \
	  --runs runs/acdc --set $(REAL_SET) $(ACDC_SET) --decoder $(ACDC_DECODER) --out results/acdc-$(STAMP)

cross-dataset: caffe $(ACDC_CYCLE)/sequences.h5 $(SUNNY)/sequences.h5  ## train on all of ACDC, test on Sunnybrook, detect on its DICOM
	[ -f $(FINAL)/final_model.txt ] || $(PY) -m tools.train --data $(ACDC_CYCLE) \
	  --fold all --variant tempreg --config $(REAL_CONFIG) --iters $(REAL_ITERS) --set $(REAL_SET) \
	  --out $(FINAL)
	$(PY) -m tools.evaluate_afd --run $(FINAL) --data $(SUNNY) --list all.txt \
	  --out results/cross-dataset-$(STAMP)
	$(PY) -m tools.evaluate_afd --run $(FINAL) --data $(SUNNY) --list all.txt --stack \
	  --out results/cross-dataset-$(STAMP)/stack
	$(PY) -m tools.detect $(SUNNYBROOK)/dicoms --run $(FINAL) --roi 0.4 \
	  --out results/detect-sunnybrook-$(STAMP) --plot

clean:  ## remove the venv and generated data (not the Caffe cache)
	rm -rf $(VENV) data runs results
