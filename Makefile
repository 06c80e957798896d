# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Each creates the virtual environment itself on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-tools bench bench-decode install clean

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

# The learning benchmark of the README (6 rows x 3 seeds on the sample data, about 80 min on 2 cores):
# bench/results/learning.{json,md,png}. The decoding benchmark: `make bench-decode`.
bench: $(STAMP)
	$(BIN)/python bench/learning_bench.py --out bench/results/learning.json

bench-decode: $(STAMP)
	$(BIN)/python bench/decode_bench.py --out bench/results/decode.json

clean:
	rm -rf runs bench/work
