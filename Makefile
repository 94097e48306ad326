# lcbench: `make reproduce` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The torch build this project's machines serve from local disk; users' clusters may bring their own.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
OUT    ?= outputs
DATA   ?=

.PHONY: install test test-fast reproduce reproduce-imagenet bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q -rs

test-fast: install
	$(PY) -m pytest -q -m "not slow and not slurm"

# Until the sweep runner exists: the pretrain stage of every digits model, then their records.
reproduce: install
	@for m in digits_mlp digits_vit digits_mixer digits_vgg; do \
		$(VENV)/bin/lcbench run runs/digits_pretrain.yaml model=$$m output_root=$(OUT) --no-progress || exit 1; \
	done
	$(VENV)/bin/lcbench results $(OUT)

reproduce-imagenet: install
	@test -n "$(DATA)" || { echo "reproduce-imagenet: set DATA=/path/to/imagenet (train/<wnid>/, val/<wnid>/)"; exit 2; }
	$(VENV)/bin/lcbench run runs/imagenet_pretrain.yaml data_root=$(DATA) output_root=$(OUT)

bench: install
	@mkdir -p results/bench
	$(PY) -m lcbench.bench

lint: install
	$(VENV)/bin/ruff check lcbench baselines tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
