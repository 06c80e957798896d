# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Each creates the virtual environment itself on first use.
# The first interpreter found that pyproject.toml allows (>=3.11,<3.14), tried in this order; a
# name that exists but does not run (a pyenv shim of an uninstalled version) is skipped.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' 2>/dev/null && { echo $$p; break; }; done)
ifeq ($(PYTHON),)
$(error no Python 3.11, 3.12 or 3.13 found: install one, or give PYTHON=/path/to/python3)
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-tools bench bench-family bench-finetune bench-decode install clean images dvc-lock

install: $(STAMP)

# Reinstall when the dependencies change. The torch wheels are the CUDA builds (~6 GB): the
# CPU-only wheel does not work with torchvision/torchaudio at these pins.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,pipelines,storage,dev]'
	$(BIN)/pip check
	touch $@

# The main job on the embedded default: sample data, XDC pretraining, linear-probe evaluation.
# Without a GPU it uses xdc_core/presets/cpu-demo.yaml (xdc_cli/settings.py: the default rule). Rerunning resumes from what is already in runs/demo.
demo: $(STAMP)
	$(BIN)/xdc run --out runs/demo

# The test tools pip cannot bring (promtool, the Pushgateway, checkov, Chromium): installed if missing.
test-tools: $(STAMP)
	bash .ci/test-tools

test: test-tools
	$(BIN)/pytest -q  # everything; the fast loop: $(BIN)/pytest -m "not integration"

# The learning benchmark of the README (6 rows x 3 seeds on the sample data; about 2 h 40 min on
# 2 cores with the preset's 6 clustering iterations):
# bench/results/learning.{json,md,png}; `make bench-family` runs XDC against random init on every
# member of the dataset family (bench/family.yaml; 25-28 min per member on 2 cores):
# bench/results/learning-MEMBER.*; FAMILY_METHODS="xdc supervised sdc mdc cdc" adds the other rows
# (a few hours per member). On your own
# labelled manifest: $(BIN)/python bench/learning_bench.py --data MANIFEST --out FILE.json.
# In parts (--methods xdc, then the others), joined by learning_bench.py --merge PART.json ... --out FILE.json.
# `make bench-finetune` finetunes the XDC encoders `make bench-family` left for shapes, and their
# random init, on 10 labelled videos per class (about 2 min): bench/results/finetune.json.
# The decoding benchmark: `make bench-decode`.
FAMILY := $(shell sed -n 's/^\([a-z0-9-]*\):.*/\1/p' bench/family.yaml)
bench: $(STAMP)
	$(BIN)/python bench/learning_bench.py --out bench/results/learning.json

FAMILY_METHODS ?= xdc
bench-family: $(STAMP)
	for m in $(FAMILY); do $(BIN)/python bench/learning_bench.py --methods $(FAMILY_METHODS) --member $$m --out bench/results/learning-$$m.json || exit 1; done

bench-finetune: $(STAMP)
	$(BIN)/python bench/finetune_bench.py --learning bench/results/learning-shapes.json --out bench/results/finetune.json

bench-decode: $(STAMP)
	$(BIN)/python bench/decode_bench.py --out bench/results/decode.json

# dvc.lock: `dvc repro` of the sample pipeline (dvc.yaml, params.yaml; about 12 min on 2 cores). Run it
# and commit dvc.lock after a change to the code or to params.yaml: tests/test_dvc.py fails while it is stale.
dvc-lock: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The component images xdc:<version>-cpu and xdc:<version>-gpu (docker/README.md), with buildah or
# docker. One flavour: `make images FLAVOURS=cpu`; a registry's tags too: REGISTRY=ghcr.io/xdc-project
# (PUSH=1 pushes them); BASE=debian builds on the local Debian base without trying Docker Hub.
images:
	bash docker/build.sh

clean:
	rm -rf runs bench/work
