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
# Every venv installs from a hashed lock (`make lock` rewrites them from the requirements
# files; docs/dependencies.md "Locked dependencies"), so every machine gets the same files.
# TORCH=cpu: PyTorch's CPU wheel from its own index for .venv (no ~4 GB of CUDA libraries;
# docs/dependencies.md "Setup size"); the default, pypi, is the lock's torch from PyPI (a CUDA build).
# A .venv keeps the choice it was made with (recorded in its stamp).
TORCH ?= $(or $(shell cat $(RUNTIME_STAMP) 2>/dev/null),pypi)
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
LOCK_FLAGS := --quiet --universal --python-version 3.11 --generate-hashes $(if $(UPGRADE),--upgrade)
# The e2e test records every connection its workloads make with strace.
STRACE := /usr/bin/strace
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Demo knobs: `make demo DATASET=cifar10 CIFAR10_SOURCE=path/to/cifar-10-python.tar.gz`,
# `make demo DATASET=imagefolder SOURCE=path/to/folder-or-archive` (one subfolder per class),
# HOST, PORT, SERVE=no (below); `inference demo-check` checks them all before anything runs.
# Each image folder is a dataset of its own, imagefolder-<label>: the label is DATASET_NAME,
# else the folder's own name, so two folders never share a model name.
# Images default to fastcifar, the best accuracy per minute on CPU (docs/models.md): with
# 2 processes, 32 images each per step; MODEL=resnet18 BATCH_SIZE=128 LR=0.1 EPOCHS=10 for
# the ResNet-18.
DATASET ?= digits
MODEL ?= $(if $(filter digits,$(DATASET)),smallcnn,fastcifar)
EPOCHS ?= $(if $(filter digits,$(DATASET)),12,$(if $(filter fastcifar,$(MODEL)),8,10))
BATCH_SIZE ?= $(if $(filter digits,$(DATASET)),64,$(if $(filter fastcifar,$(MODEL)),32,128))
LR ?= $(if $(filter fastcifar,$(MODEL)),0.2,0.1)
DEMO_STORE ?= $(CURDIR)/demo-store
# 127.0.0.1: the demo app is open (no access token), so only this machine reaches it;
# HOST=0.0.0.0 opens it to the network.
HOST ?= 127.0.0.1
PORT ?= 7860
# SERVE=no: train, publish and stop (scripts, CI) instead of serving until Ctrl-C.
SERVE ?= yes
CIFAR10_SOURCE ?=
SOURCE ?= $(CIFAR10_SOURCE)
DATASET_NAME ?=
# Another seed is another run: `make demo SEED=1` trains again what was published already.
SEED ?= 0

.PHONY: demo demo-traffic test test-fast bench lint chromium strace prometheus clean clean-store help \
  gitops-drift controlplane test-cluster
help:
	@echo "make demo          train on DATASET with 2 local DDP processes, publish, serve the app"
	@echo "make demo-traffic  with make demo serving: its test images, then shifted ones"
	@echo "                   (SHIFT=dark, noise or other): the Monitoring tab turns red"
	@echo "make test          set up .venv and run every test (browser, image, control plane, e2e)"
	@echo "make test-fast     every test but the browser tests"
	@echo "make test-cluster  the cluster tier only, on a real control plane"
	@echo "make bench         training and inference benchmark figures (CIFAR10_SOURCE=... adds"
	@echo "                   time to accuracy)"
	@echo "make lint          ruff on every Python file"
	@echo "make lock          rewrite the hashed locks after changing a requirements*.txt"
	@echo "                   (UPGRADE=1: the newest versions allowed)"
	@echo "make image-smoke   build the trainer image with buildah and run it (part of make test)"
	@echo "make controlplane  build the cluster tier's control plane into ~/.cache/trainstack"
	@echo "                   (GO=$(GO))"
	@echo "make gitops-drift  do the committed GitOps files match the program? (GITOPS_STACK=gitops)"
	@echo "make clean         remove the venvs and test caches; keeps DEMO_STORE's models"
	@echo "make clean-store   remove DEMO_STORE: every dataset and model make demo stored"
	@echo ""
	@echo "make demo's knobs (default):"
	@echo "  DATASET=digits        digits, cifar10 or imagefolder (your own images: SOURCE=...)"
	@echo "  SOURCE=               cifar10: an archive or URL (default: the official URL);"
	@echo "                        imagefolder: a folder of <class>/<image>, or a .zip/.tar.gz"
	@echo "  CIFAR10_SOURCE=       the same as SOURCE"
	@echo "  DATASET_NAME=         imagefolder: the dataset is imagefolder-<DATASET_NAME>"
	@echo "                        (default: the folder's own name)"
	@echo "  MODEL=smallcnn        for digits; fastcifar for the others (also resnet18,"
	@echo "                        resnet18-imagenet)"
	@echo "  EPOCHS=12             for digits; 8 for fastcifar, 10 for the others"
	@echo "  BATCH_SIZE=64         for digits; 32 for fastcifar, 128 for the others (per process)"
	@echo "  LR=0.1                0.2 for fastcifar"
	@echo "  SEED=0                another seed trains another run"
	@echo "  HOST=127.0.0.1        where the app listens (no access token: 0.0.0.0 opens it)"
	@echo "  PORT=7860             0: any free port"
	@echo "  SERVE=yes             no: train, publish and stop"
	@echo "  DEMO_STORE=./demo-store  the local store every demo shares"
	@echo "  TORCH=pypi            cpu: PyTorch's CPU wheels, for a new .venv"
	@echo "  PYTHON=python3        the Python that makes the venvs"
	@echo "  SHIFT=dark            make demo-traffic's shifted images: dark, noise or other"

# One venv for everything, so any documented order works (`make demo` then `pulumi up`,
# `make test` then `pulumi up`): the trainer's and app's requirements, the Pulumi program's
# and the test tools, all from requirements.lock; then this project, editable (`import
# trainer, inference, infra` from any directory). --no-deps: the lock is the whole closure,
# and `pip check` proves it.
$(RUNTIME_STAMP): requirements.lock pyproject.toml tools/lock/torch_split.py | torch-choice
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
ifeq ($(TORCH),cpu)
	$(PYTHON) tools/lock/torch_split.py requirements.lock cpu $(VENV)/torch-cpu
	$(BIN)/pip install --quiet --no-deps --index-url $(TORCH_CPU_INDEX) -r $(VENV)/torch-cpu/torch.txt
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(VENV)/torch-cpu/rest.lock
else
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements.lock
endif
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	echo $(TORCH) > $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	touch $@

# A .venv made with one torch cannot become the other in place (the CUDA libraries stay).
.PHONY: torch-choice
torch-choice:
	@case "$(TORCH)" in pypi|cpu) ;; *) echo "TORCH=$(TORCH): expected pypi (the lock's torch" \
	  "from PyPI, a CUDA build) or cpu (PyTorch's CPU wheel)" >&2; exit 2 ;; esac
	@made=$$(cat $(RUNTIME_STAMP) 2>/dev/null) || exit 0; \
	if [ "$${made:-pypi}" != "$(TORCH)" ]; then echo "$(VENV) was made with TORCH=$${made:-pypi};" \
	  "for TORCH=$(TORCH) remove it first (rm -rf $(VENV); make clean would also delete" \
	  "$(DEMO_STORE), every model the demos trained)" >&2; exit 2; fi

$(MLFLOW_STAMP): requirements-mlflow-server.lock
	[ -x $(MLFLOW_VENV)/bin/python ] || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet --no-deps --require-hashes -r requirements-mlflow-server.lock
	touch $@

$(CHECKOV_STAMP): requirements-checkov.lock
	[ -x $(CHECKOV_VENV)/bin/python ] || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --no-deps --require-hashes -r requirements-checkov.lock
	touch $@

# After changing a requirements*.txt: rewrite the locks (uv, pinned in requirements-dev.txt).
# Pins already in a lock stay unless a requirement needs another; UPGRADE=1 takes the newest
# allowed. The image's lock is the image's part of requirements.lock (same files, same hashes).
.PHONY: lock
lock: $(DEV_STAMP)
	$(BIN)/uv pip compile $(LOCK_FLAGS) --no-emit-package trainstack requirements-dev.txt \
	  -o requirements.lock
	$(BIN)/uv pip compile $(LOCK_FLAGS) trainer/requirements.txt inference/requirements.txt \
	  -c requirements.lock -o requirements-image.lock
	$(BIN)/uv pip compile $(LOCK_FLAGS) requirements-mlflow-server.txt -o requirements-mlflow-server.lock
	$(BIN)/uv pip compile $(LOCK_FLAGS) requirements-checkov.txt -o requirements-checkov.lock

# Builds trainer/Dockerfile with buildah and runs the image as a pod would (tools/image/);
# `make test` runs it. Needs root (debootstrap, mounts); caches in ~/.cache/trainstack/image.
.PHONY: image-smoke buildah
image-smoke: $(DEV_STAMP) buildah
	$(SUDO) tools/image/smoke.sh

buildah:
	@[ -x /usr/bin/buildah ] && [ -x /usr/sbin/debootstrap ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq buildah debootstrap >/dev/null; }

chromium:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The monitoring tests run a real Prometheus and promtool (Debian's 2.42; no service starts).
PROMETHEUS := /usr/bin/prometheus
prometheus:
	@[ -x $(PROMETHEUS) ] || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

strace:
	@[ -x $(STRACE) ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq strace >/dev/null; }

test: $(DEV_STAMP) $(MLFLOW_STAMP) $(CHECKOV_STAMP) chromium strace prometheus controlplane image-smoke
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

test-fast: $(DEV_STAMP) $(MLFLOW_STAMP) $(CHECKOV_STAMP) strace prometheus controlplane
	$(BIN)/python -m pytest -m "not browser"

lint: $(DEV_STAMP)
	$(BIN)/ruff check trainer inference infra tests bench docs tools __main__.py

# Every knob (and the port) before anything starts: one line naming what is wrong (stderr);
# else the dataset's name (stdout). Expanded with the recipe, once .venv exists.
demo_dataset_name = $(shell $(BIN)/python -m inference demo-check --dataset '$(DATASET)' \
  --dataset-name '$(DATASET_NAME)' --model '$(MODEL)' --epochs '$(EPOCHS)' \
  --batch-size '$(BATCH_SIZE)' --lr '$(LR)' --seed '$(SEED)' --host '$(HOST)' \
  --port '$(PORT)' --source '$(SOURCE)' --serve '$(SERVE)')

demo: $(RUNTIME_STAMP)
	$(eval NAME_OF_DATASET := $(demo_dataset_name))
	@[ -n '$(NAME_OF_DATASET)' ] || exit 2
	$(BIN)/python -m trainer buckets --store $(DEMO_STORE)
	$(if $(filter cifar10 imagefolder,$(DATASET)),$(BIN)/python -m trainer ingest --store $(DEMO_STORE) \
	  --dataset $(DATASET) --dataset-name $(NAME_OF_DATASET) $(if $(SOURCE),--source '$(SOURCE)'))
	@# One thread per process: two DDP processes share the 2 cores of a small machine.
	@# trainer.launch is torchrun with a one-line ending (Ctrl-C, a failed rank).
	OMP_NUM_THREADS=1 $(BIN)/python -m trainer.launch --standalone --nproc_per_node 2 \
	  -m trainer train --store $(DEMO_STORE) --dataset $(DATASET) \
	  --dataset-name $(NAME_OF_DATASET) --model $(MODEL) --epochs $(EPOCHS) \
	  --batch-size $(BATCH_SIZE) --lr $(LR) --seed $(SEED)
	@# The model just trained, <model>-<dataset name> (trainer.contract.layout.model_name),
	@# not the newest of the store: every dataset's demo shares it.
	$(if $(filter yes,$(SERVE)),exec $(BIN)/python -m inference serve --store $(DEMO_STORE) \
	  --model-name $(MODEL)-$(NAME_OF_DATASET) --host $(HOST) --port $(PORT))

# With `make demo` serving (another terminal): 512 test-split images, then 512 shifted ones
# (SHIFT=dark|noise|other); the app checks every 256 predictions, and its Monitoring tab
# turns from green to red.
SHIFT ?= dark
demo-traffic: $(RUNTIME_STAMP)
	$(BIN)/python -m inference traffic --url http://$(HOST):$(PORT) --store $(DEMO_STORE) --shift none
	$(BIN)/python -m inference traffic --url http://$(HOST):$(PORT) --store $(DEMO_STORE) --shift $(SHIFT)

# Each part says when it starts and how long it took (minutes each on 2 CPU cores).
bench: $(DEV_STAMP)
	@$(call timed,bench/train_throughput.py)
	@$(call timed,bench/train_memory.py)
	@$(call timed,bench/inference_latency.py)
	@$(if $(CIFAR10_SOURCE),$(call timed,bench/time_to_accuracy.py --data $(CIFAR10_SOURCE)))

timed = echo "== $(1): started $$(date +%T)"; start=$$SECONDS; $(BIN)/python $(1) && \
  echo "== $(1): took $$((SECONDS - start)) s"

# Render mode: do the committed files match what the program renders? (docs/gitops.md,
# "Checking for drift"; `pulumi preview --expect-no-changes` cannot tell there.) Needs the pulumi CLI.
GITOPS_STACK ?= gitops
gitops-drift: $(RUNTIME_STAMP)
	$(BIN)/python -m infra.drift --stack $(GITOPS_STACK)

# The demo store holds every model `make demo` trained: removed only when asked by name.
clean:
	@echo "removing $(VENV) $(MLFLOW_VENV) $(CHECKOV_VENV) .pytest_cache"
	@[ ! -d '$(DEMO_STORE)' ] || echo "keeping $(DEMO_STORE) (every model make demo trained;" \
	  "make clean-store removes it)"
	rm -rf $(VENV) $(MLFLOW_VENV) $(CHECKOV_VENV) .pytest_cache

clean-store:
	@echo "removing $(DEMO_STORE): every dataset and model make demo stored there"
	rm -rf '$(DEMO_STORE)'
