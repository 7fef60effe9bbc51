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

# `make train` settings: a recipe (recipes/<name>.toml) and its prepared data
RECIPE  ?= demo
DATA    ?= data/prepared/$(RECIPE)
FOLD    ?= 0
VARIANT ?= tempreg

.PHONY: help venv caffe caffe-test browser gpu-bundle prototxt test test-fast demo bench clean train fetch-weights synthetic \
        acdc cross-dataset shipped-model acdc-pixels cross-dataset-pixels paper-zf

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

# Caffe's own gtest suite (src/caffe/test), built from the same source, patches and OpenBLAS as the
# cached build and run twice (CPU tests; the second time with patch 0015's OpenMP loops forced onto
# two threads on every blob): ~10 min of both cores, so not part of `make test`. Run it after every
# patch or BLAS change (docs/caffe.md, "Caffe's own tests"); logs in results/caffe-test-<stamp>/.
caffe-test: venv  ## build and run BVLC Caffe's own CPU tests (gtest) on this build, twice: as built, and with 0015's loops threaded on small blobs
	CAFFE_TEST_OUT=$(abspath results/caffe-test-$(STAMP)) tools/caffe/build_caffe.sh $(abspath $(PY)) --test

# A GPU machine without compiler or network: the CUDA build for its Python 3.12 and what it needs,
# packed into device-bundle/ for tools/device_check.sh (docs/caffe.md, "Running on a GPU machine").
BUNDLE_PYTHON ?= python3.12
gpu-bundle: venv  ## pack the CUDA 13 Caffe for a GPU machine's Python 3.12: make gpu-bundle BUNDLE_PYTHON=...
	tools/caffe/gpu_bundle.sh $(BUNDLE_PYTHON)

prototxt: caffe  ## regenerate prototxt/<recipe>/ from recipes/ and models/
	$(PY) -m models.generate

demo: caffe  ## the main job, recipe demo: synthetic cohort -> prepare -> train 3 variants x 4 folds -> Table 1 in results/
	$(PY) -m tools.demo

# The review page's test (tests/test_report_browser.py) opens it in Debian's chromium, driven by
# Playwright (pinned in requirements.lock; it downloads no browser of its own). Installed here as
# root (~1 min); without root or a package mirror the test skips and says why.
browser:  ## install Debian's chromium for the review page's browser test (root)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] \
	  && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	     --no-install-recommends chromium; } \
	  || echo "browser: chromium is not installed (needs root and Debian's packages); the browser test will skip"

test: caffe browser  ## run the test suite
	$(PY) -m pytest -q

test-fast: caffe browser  ## the tests without the slow training ones
	$(PY) -m pytest -q -m "not slow"

synthetic: venv  ## write the synthetic DICOM cohort to data/synthetic
	$(PY) -m data_prep.synthetic data/synthetic --patients 24 --seed 0 --format dicom

train: caffe  ## train one variant of a recipe: make train RECIPE=demo [DATA=data/prepared/demo FOLD=0 VARIANT=tempreg ITERS= WEIGHTS=]
	$(PY) -m tools.train --recipe $(RECIPE) --data $(DATA) --fold $(FOLD) --variant $(VARIANT) \
	  $(if $(ITERS),--iters $(ITERS),) $(if $(WEIGHTS),--weights $(WEIGHTS),)

fetch-weights: caffe  ## download the ImageNet ZF model (md5-checked) into data/imagenet/ (FROM=local file)
	$(PY) -m tools.fetch_imagenet_zf $(if $(FROM),--from $(FROM),)

# The engines `make bench` compares Caffe with (PyTorch CPU, OpenCV 4.x DNN) live in their own venv.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: requirements-bench.lock
	$(PYTHON_BASE) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -r requirements-bench.lock
	touch $@

bench: caffe $(BENCH_VENV)/.installed  ## one table: Caffe zf/small vs PyTorch and OpenCV, x the sgemm floor, DICOM -> HDF5 (docs/performance.md); cohort detection throughput
	$(PY) -m tools.bench --peers $(BENCH_VENV)/bin/python
	$(PY) -m tools.bench_cohort

# Real data (README, "Results"; docs/results.md): each target runs one recipe of recipes/, whose
# file holds the net configuration, its overrides, label convention, decoder, iterations and
# data; the nets it trains are the files in prototxt/<recipe>/.
# `make acdc` and `make cross-dataset` read every dataset the same way (docs/scale-and-crop.md):
# a 128 mm square around the LV found in the images at 96 px, the cycle setting and one decoder
# (fit_rwave), no ROI or crop flag per dataset (recipes acdc_mm, cross_sunnybrook_mm).
# `make acdc-pixels` / `make cross-dataset-pixels`: the earlier recipes acdc / cross_sunnybrook
# (the scanner's pixels; Sunnybrook with its hand-set ROI of 0.4), kept for the earlier rows.
ACDC       ?= ../shared/data/acdc
SUNNYBROOK ?= ../shared/data/sunnybrook
# The cross-dataset models live outside the repository; tools.train --reuse keeps a finished run
# of the same recipe and refuses one of another.
MODELS     ?= $(HOME)/tempregnet-models
FINAL      ?= $(MODELS)/cross_sunnybrook_mm
FINAL_PIXELS ?= $(MODELS)/cross_sunnybrook
STAMP      := $(shell date +%Y%m%d-%H%M%S)
RECIPE_GET  = $(PY) -m tools.recipes

data/prepared/acdc_mm/sequences.h5:
	$(PY) -m data_prep.prepare --recipe acdc_mm $(ACDC) data/prepared/acdc_mm --plot-crops

data/prepared/cross_sunnybrook_mm/sequences.h5:
	$(PY) -m data_prep.prepare --recipe cross_sunnybrook_mm $(ACDC) data/prepared/cross_sunnybrook_mm

data/prepared/cross_sunnybrook_mm-test/sequences.h5:
	$(PY) -m data_prep.prepare --recipe cross_sunnybrook_mm --test-data $(SUNNYBROOK) \
	  data/prepared/cross_sunnybrook_mm-test --plot-crops

acdc: caffe data/prepared/acdc_mm/sequences.h5  ## recipe acdc_mm: Table 1 on ACDC, patient-level 4-fold CV, LV crop at 1.33 mm/px: make acdc ACDC=<folder>
	$(PY) -m tools.table1 --recipe acdc_mm --data data/prepared/acdc_mm --runs runs/acdc_mm \
	  --out results/acdc_mm-$(STAMP)

cross-dataset: caffe data/prepared/cross_sunnybrook_mm/sequences.h5 data/prepared/cross_sunnybrook_mm-test/sequences.h5  ## recipe cross_sunnybrook_mm: train on all of ACDC, test on Sunnybrook, detect on its DICOM
	$(PY) -m tools.train --recipe cross_sunnybrook_mm --data data/prepared/cross_sunnybrook_mm \
	  --fold all --out $(FINAL) --reuse
	$(PY) -m tools.evaluate_afd --run $(FINAL) --data data/prepared/cross_sunnybrook_mm-test \
	  --list all.txt --out results/cross-dataset-$(STAMP)
	$(PY) -m tools.evaluate_afd --run $(FINAL) --data data/prepared/cross_sunnybrook_mm-test \
	  --list all.txt --stack --out results/cross-dataset-$(STAMP)/stack
	$(PY) -m tools.detect $(SUNNYBROOK)/dicoms --run $(FINAL) \
	  --out results/detect-sunnybrook-$(STAMP) --plot

# `make paper-zf` (recipe paper_zf_cpu): the paper's ZF + LSTM, from scratch, Table 1 on ACDC.
# Its 12 runs take hours on 2 cores, so the target is resumable: the run folders live outside the
# clone (RUNS_HOME, kept between sessions on the same machine), finished runs are reused and a
# killed run resumes from its last snapshot (every 100 iterations). Kill it and run it again
# with the same STAMP (its first run prints it in the table folder names).
# TempReg-Net's four folds come first, with a table of their own, so the headline row exists
# before the other variants are trained.
RUNS_HOME  ?= $(HOME)/tempregnet-runs

data/prepared/paper_zf_cpu/sequences.h5:
	$(PY) -m data_prep.prepare --recipe paper_zf_cpu $(ACDC) data/prepared/paper_zf_cpu

# A rerun with the same STAMP keeps a table already written.
results/paper_zf_cpu-tempreg-$(STAMP)/table1.md: | caffe data/prepared/paper_zf_cpu/sequences.h5
	$(PY) -m tools.table1 --recipe paper_zf_cpu --data data/prepared/paper_zf_cpu \
	  --runs $(RUNS_HOME)/paper_zf_cpu --variants tempreg --no-baselines \
	  --out results/paper_zf_cpu-tempreg-$(STAMP)

results/paper_zf_cpu-$(STAMP)/table1.md: | caffe data/prepared/paper_zf_cpu/sequences.h5 results/paper_zf_cpu-tempreg-$(STAMP)/table1.md
	$(PY) -m tools.table1 --recipe paper_zf_cpu --data data/prepared/paper_zf_cpu \
	  --runs $(RUNS_HOME)/paper_zf_cpu --out results/paper_zf_cpu-$(STAMP)

paper-zf: results/paper_zf_cpu-$(STAMP)/table1.md  ## recipe paper_zf_cpu: the paper's ZF net from scratch on ACDC, Table 1 (resumable; hours): make paper-zf ACDC=<folder> [STAMP=<earlier stamp>]

data/prepared/acdc/sequences.h5:
	$(PY) -m data_prep.prepare --recipe acdc $(ACDC) data/prepared/acdc

data/prepared/cross_sunnybrook/sequences.h5:
	$(PY) -m data_prep.prepare --recipe cross_sunnybrook $(ACDC) data/prepared/cross_sunnybrook

data/prepared/cross_sunnybrook-test/sequences.h5:
	$(PY) -m data_prep.prepare --recipe cross_sunnybrook --test-data $(SUNNYBROOK) \
	  data/prepared/cross_sunnybrook-test

acdc-pixels: caffe data/prepared/acdc/sequences.h5  ## earlier recipe acdc: Table 1 on ACDC in the copy's own pixels, paper labels
	$(PY) -m tools.table1 --recipe acdc --data data/prepared/acdc --runs runs/acdc \
	  --out results/acdc-$(STAMP)

cross-dataset-pixels: caffe data/prepared/cross_sunnybrook/sequences.h5 data/prepared/cross_sunnybrook-test/sequences.h5  ## earlier recipe cross_sunnybrook: all of ACDC -> Sunnybrook with the hand-set ROI
	$(PY) -m tools.train --recipe cross_sunnybrook --data data/prepared/cross_sunnybrook --fold all \
	  --out $(FINAL_PIXELS) --reuse
	$(PY) -m tools.evaluate_afd --run $(FINAL_PIXELS) --data data/prepared/cross_sunnybrook-test \
	  --list all.txt --out results/cross-dataset-pixels-$(STAMP)
	$(PY) -m tools.evaluate_afd --run $(FINAL_PIXELS) --data data/prepared/cross_sunnybrook-test \
	  --list all.txt --stack --out results/cross-dataset-pixels-$(STAMP)/stack
	$(PY) -m tools.detect $(SUNNYBROOK)/dicoms --run $(FINAL_PIXELS) \
	  --roi $$($(RECIPE_GET) cross_sunnybrook test_data.roi) \
	  --out results/detect-sunnybrook-pixels-$(STAMP) --plot

clean:  ## remove the venv and generated data (not the Caffe cache)
	rm -rf $(VENV) data runs results

# The model shipped in models/ (docs/detection.md): the cross-dataset target's model (recipe
# cross_sunnybrook_mm), its Sunnybrook evaluation and the acdc target's cross-validation of the
# same settings (same STAMP) as a Model Zoo folder: weights,
# deploy net, run record, readme.md with the sha1 and the measured accuracy.
SHIPPED    ?= models/tempregnet_acdc_small96
shipped-model: acdc cross-dataset  ## recipe cross_sunnybrook_mm's model (+ acdc_mm's 4-fold CV) -> the shipped model folder in models/
	$(PY) -m tools.package_model --run $(FINAL) --eval results/cross-dataset-$(STAMP)/afd.json \
	  --eval-stack results/cross-dataset-$(STAMP)/stack/afd.json \
	  --cv results/acdc_mm-$(STAMP)/table1.json --out $(SHIPPED) --force
