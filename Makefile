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

.PHONY: help venv caffe prototxt test test-fast demo bench clean train fetch-weights synthetic \
        acdc acdc-paper cross-dataset

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
caffe: venv  ## build BVLC Caffe once (cached) and link it into .venv
	prefix=$$(tools/caffe/build_caffe.sh $(abspath $(PY))); \
	$(PY) -m tools.caffe_link "$$prefix"

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
REAL_SET   ?= input_contrast=true input_motion=true train_warp=0.4 train_rotate=15 train_zoom=0.15 \
              train_gamma=0.3 fc_width=256 feature_dim=128 lstm_hidden=128
# Every real dataset is read the same way (docs/scale-and-crop.md): a REAL_FIELD_MM square around
# the LV found in the images, REAL_PX pixels a side (128 / 96 = 1.33 mm per stored pixel), the
# cycle label convention and one decoder (fit_rwave) for scans that start at ED (ACDC) and scans
# whose ED lies before the R wave (Sunnybrook). No dataset-specific crop, ROI or setting.
REAL_FIELD_MM ?= 128
REAL_DECODER  ?= fit_rwave
REAL_PREP  := --size $(REAL_PX) --field-mm $(REAL_FIELD_MM)
# The ACDC copy's header states no pixel size for 21 of its 50 patients (pixdim 1 x 1 x 1, units
# unknown): they are read at the median pixdim of the 29 that state one (1.367-1.875 mm).
ACDC_MM_PER_PX ?= 1.40625
# The paper's setting stays one recipe away: make acdc-paper (Eq. 4 verbatim, whole frames).
ACDC_SET   ?= lstm_cycles=1 train_roll=false
ACDC_DECODER ?= fit_es
# The final model, outside the repository; its name changes with its settings, so an older model
# is never taken for this one.
FINAL      ?= $(MODELS)/acdc_$(REAL_CONFIG)_mm$(REAL_FIELD_MM)_wide_tempreg_contrast_motion_warp_augment
ACDC_PAPER := data/acdc-paper-$(REAL_PX)
ACDC_CYCLE := data/acdc-$(REAL_PX)-mm$(REAL_FIELD_MM)
SUNNY      := data/sunnybrook-$(REAL_PX)-mm$(REAL_FIELD_MM)

$(ACDC_PAPER)/sequences.h5:
	$(PY) -m data_prep.prepare --source acdc $(ACDC) $(ACDC_PAPER) --size $(REAL_PX) --label paper

$(ACDC_CYCLE)/sequences.h5:
	$(PY) -m data_prep.prepare --source acdc $(ACDC) $(ACDC_CYCLE) $(REAL_PREP) \
	  --mm-per-px $(ACDC_MM_PER_PX) --plot-crops

$(SUNNY)/sequences.h5:
	$(PY) -m data_prep.prepare --source sunnybrook $(SUNNYBROOK) $(SUNNY) $(REAL_PREP) --plot-crops

acdc: caffe $(ACDC_CYCLE)/sequences.h5  ## Table 1 on ACDC, patient-level 4-fold CV: make acdc ACDC=<folder>
	$(PY) -m tools.table1 --data $(ACDC_CYCLE) --config $(REAL_CONFIG) --iters $(REAL_ITERS) \
	  --runs runs/acdc-mm$(REAL_FIELD_MM) --set $(REAL_SET) --decoder $(REAL_DECODER) \
	  --out results/acdc-$(STAMP)

acdc-paper: caffe $(ACDC_PAPER)/sequences.h5  ## the earlier ACDC recipe: paper labels, whole frames, fit_es
	$(PY) -m tools.table1 --data $(ACDC_PAPER) --config $(REAL_CONFIG) --iters $(REAL_ITERS) \
	  --runs runs/acdc --set $(REAL_SET) $(ACDC_SET) --decoder $(ACDC_DECODER) \
	  --out results/acdc-paper-$(STAMP)

cross-dataset: caffe $(ACDC_CYCLE)/sequences.h5 $(SUNNY)/sequences.h5  ## train on all of ACDC, test on Sunnybrook, detect on its DICOM
	[ -f $(FINAL)/final_model.txt ] || $(PY) -m tools.train --data $(ACDC_CYCLE) \
	  --fold all --variant tempreg --config $(REAL_CONFIG) --iters $(REAL_ITERS) --set $(REAL_SET) \
	  --out $(FINAL)
	$(PY) -m tools.evaluate_afd --run $(FINAL) --data $(SUNNY) --list all.txt \
	  --decoder $(REAL_DECODER) --out results/cross-dataset-$(STAMP)
	$(PY) -m tools.evaluate_afd --run $(FINAL) --data $(SUNNY) --list all.txt --stack \
	  --decoder $(REAL_DECODER) --out results/cross-dataset-$(STAMP)/stack
	$(PY) -m tools.detect $(SUNNYBROOK)/dicoms --run $(FINAL) --decoder $(REAL_DECODER) \
	  --out results/detect-sunnybrook-$(STAMP) --plot

clean:  ## remove the venv and generated data (not the Caffe cache)
	rm -rf $(VENV) data runs results
