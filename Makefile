# trainstack: `make demo` and `make test` each set themselves up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
# The tests' MLflow tracking server lives in its own venv: the full `mlflow` package is a
# server with pandas, pyarrow, SQLAlchemy...; the image and .venv get only mlflow-skinny.
MLFLOW_VENV := .venv-mlflow
MLFLOW_STAMP := $(MLFLOW_VENV)/.installed
# The outside policy scanner the tests run (checkov) lives in its own venv: its pins
# (boto3, packaging, ...) clash with the project's.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHROMIUM := /usr/bin/chromium
# The e2e test records every connection its workloads make with strace.
STRACE := /usr/bin/strace
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Demo knobs: `make demo DATASET=cifar10 CIFAR10_SOURCE=path/to/cifar-10-python.tar.gz`,
# `make demo DATASET=imagefolder SOURCE=path/to/folder-or-archive` (one subfolder per class)
# Images default to fastcifar, the best accuracy per minute on CPU (README, "Models"): with
# 2 processes, 32 images each per step; MODEL=resnet18 BATCH_SIZE=128 LR=0.1 EPOCHS=10 for
# the ResNet-18.
DATASET ?= digits
MODEL ?= $(if $(filter digits,$(DATASET)),smallcnn,fastcifar)
EPOCHS ?= $(if $(filter digits,$(DATASET)),12,$(if $(filter fastcifar,$(MODEL)),8,10))
BATCH_SIZE ?= $(if $(filter digits,$(DATASET)),64,$(if $(filter fastcifar,$(MODEL)),32,128))
LR ?= $(if $(filter fastcifar,$(MODEL)),0.2,0.1)
DEMO_STORE ?= $(CURDIR)/demo-store
PORT ?= 7860
CIFAR10_SOURCE ?=
SOURCE ?= $(CIFAR10_SOURCE)

.PHONY: demo test test-fast bench lint chromium strace clean help controlplane test-cluster
help:
	@echo "make demo   train on $(DATASET) with 2 local DDP processes, then serve the app"
	@echo "make test   set up .venv and run the whole test suite (browser tests included)"
	@echo "make bench  print training and inference benchmark figures (CIFAR10_SOURCE=... adds time to accuracy)"

# One venv for everything, so any documented order works (`make demo` then `pulumi up`,
# `make test` then `pulumi up`): the trainer's and app's requirements, the Pulumi program's
# (requirements.txt, which also installs this project editable: `import trainer, inference,
# infra` from any directory).
$(RUNTIME_STAMP): trainer/requirements.txt inference/requirements.txt requirements.txt pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt -r trainer/requirements.txt \
	  -r inference/requirements.txt
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(MLFLOW_STAMP): requirements-mlflow-server.txt
	[ -x $(MLFLOW_VENV)/bin/python ] || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet -r requirements-mlflow-server.txt
	touch $@

$(CHECKOV_STAMP): requirements-checkov.txt
	[ -x $(CHECKOV_VENV)/bin/python ] || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

chromium:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

strace:
	@[ -x $(STRACE) ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq strace >/dev/null; }

test: $(DEV_STAMP) $(MLFLOW_STAMP) $(CHECKOV_STAMP) chromium strace controlplane
	$(BIN)/python -m pytest

# The cluster tier's control plane (tests/cluster): kube-apiserver, controller-manager,
# scheduler, kubectl, etcd, kwok, the Training Operator, Kubeflow Trainer v2 and JobSet,
# built from pinned Go modules
# into ~/.cache/trainstack/controlplane (reused once built). Prints how long setup took.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
controlplane:
	@GO=$(GO) tools/controlplane/build.sh
	@GO=$(GO) tools/controlplane/trainer-v2/build.sh

test-cluster: $(DEV_STAMP) controlplane
	$(BIN)/python -m pytest -m cluster tests/cluster

test-fast: $(DEV_STAMP) $(MLFLOW_STAMP) $(CHECKOV_STAMP) strace controlplane
	$(BIN)/python -m pytest -m "not browser"

lint: $(DEV_STAMP)
	$(BIN)/ruff check trainer inference infra tests bench docs __main__.py

demo: $(RUNTIME_STAMP)
	$(BIN)/python -m trainer buckets --store $(DEMO_STORE)
	$(if $(filter imagefolder,$(DATASET)),$(if $(SOURCE),,$(error DATASET=imagefolder needs SOURCE=path/to/folder-or-archive)))
	$(if $(filter cifar10 imagefolder,$(DATASET)),$(BIN)/python -m trainer ingest --store $(DEMO_STORE) \
	  --dataset $(DATASET) $(if $(SOURCE),--source $(SOURCE)))
	@# One thread per process: two DDP processes share the 2 cores of a small machine.
	OMP_NUM_THREADS=1 $(BIN)/torchrun --standalone --nproc_per_node 2 -m trainer train \
	  --store $(DEMO_STORE) --dataset $(DATASET) --model $(MODEL) --epochs $(EPOCHS) \
	  --batch-size $(BATCH_SIZE) --lr $(LR)
	@# The app serves the newest published model of the store: the one just trained.
	exec $(BIN)/python -m inference serve --store $(DEMO_STORE) --port $(PORT)

bench: $(DEV_STAMP)
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/train_memory.py
	$(BIN)/python bench/inference_latency.py
	$(if $(CIFAR10_SOURCE),$(BIN)/python bench/time_to_accuracy.py --data $(CIFAR10_SOURCE))

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) $(CHECKOV_VENV) $(DEMO_STORE) .pytest_cache
