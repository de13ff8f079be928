# Set-up and entry points. `make test` and `make demo` create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
# CPU build of torch for development and CI; the package metadata keeps a normal range.
TORCH_PIN ?= torch==2.13.0

.PHONY: test demo venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[test]" $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/rlplug train --output_dir runs/demo

bench: $(STAMP)
	$(BIN)/python benchmarks/grpo_steps_per_second.py

clean:
	rm -rf $(VENV) runs
