# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Each creates the virtual environment itself on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := data

.PHONY: demo test bench install clean

install: $(STAMP)

# Reinstall when the dependencies change. The torch wheels are the CUDA builds (~6 GB): the
# CPU-only wheel does not work with torchvision/torchaudio at these pins.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	$(BIN)/pip check
	touch $@

$(DEMO)/sample/manifest.csv: | $(STAMP)
	$(BIN)/xdc sample-data --out $(DEMO)/sample

demo: $(STAMP) $(DEMO)/sample/manifest.csv
	$(BIN)/xdc decode --manifest $(DEMO)/sample/manifest.csv --out $(DEMO)/decoded --config configs/cpu-demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/decode_bench.py --out bench/results/decode.json

clean:
	rm -rf $(DEMO) bench/work
