# lcbench: `make reproduce` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The torch build this project's machines serve from local disk; users' clusters may bring their own.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
OUT    ?= outputs
DATA   ?=
MODELS ?=
ARGS   ?=
MEASURE_DEVICE ?= cpu

.PHONY: install docs test test-fast search reproduce reproduce-fashion reproduce-imagenet reproduce-glue reproduce-wikitext gpu-check bench calibrate lint clean

install: $(STAMP)

# the extras the embedded sweeps use (the text sweep's language model, SLURM, W&B, structured pruning)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[text,slurm,wandb,pruning]"
	@touch $(STAMP)

# the suite also tests ONNX export and the onnxruntime latency backend (`lcbench[export]`) and builds the docs
# (`lcbench[docs]`): a sweep needs neither
TEST_STAMP := $(VENV)/.installed-test
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[all,test,docs]"
	@touch $(TEST_STAMP)

# the suite in TEST_WORKERS processes (pytest-xdist; auto: one per core), then the tests marked `serial`
# (signals, timing, the SLURM cluster, a second account) one at a time with the machine to themselves
TEST_WORKERS ?= auto
test: install $(TEST_STAMP)
	@rc=0; \
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --dist worksteal -m "not serial" \
		--durations=15 || rc=$$?; \
	$(PY) -m pytest -q -rs -m serial --durations=15 || rc=$$?; \
	exit $$rc

test-fast: install $(TEST_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not slurm"

LCBENCH  := $(VENV)/bin/lcbench
EXECUTOR ?= local
PROFILE  ?= local
PARALLEL ?= 2
DRY      ?=
# local: the digits sweep on the CPU, PARALLEL runs at once sharing the cores; slurm: job arrays (PROFILE)
LAUNCH_ARGS = $(if $(filter slurm,$(EXECUTOR)),--executor slurm --profile $(PROFILE),--executor $(EXECUTOR))

# plan, launch, wait, report: runs/digits.yaml (every method, four models, two levels, three seeds) and
# runs/text.yaml (every method on a byte-level GPT-2 trained on the standard library's source), launched
# side by side so that neither sweep's first (pretrain) runs leave a core idle
REPRODUCE_SPECS ?= digits text

SPEC_ARGS = output_root=$(OUT) $(if $(DATA),data_root=$(DATA))
# NUMERICS=portable pins the CPU kernels (MKL's COMPATIBLE branch, ATen and oneDNN at AVX2: on Intel Xeon and
# AMD EPYC alike) at a cost in speed (`make bench` -> results/bench/numerics.json); default: native kernels
NUMERICS ?= native
PORTABLE_NUMERICS := MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
RUN_ENV = $(if $(filter portable,$(NUMERICS)),env $(PORTABLE_NUMERICS))

reproduce: install
	@for spec in $(REPRODUCE_SPECS); do $(LCBENCH) plan runs/$$spec.yaml $(SPEC_ARGS) | tail -n 2; done
	@for spec in $(REPRODUCE_SPECS); do \
		$(RUN_ENV) $(LCBENCH) launch runs/$$spec.yaml $(SPEC_ARGS) $(LAUNCH_ARGS) \
			$(if $(filter local,$(EXECUTOR)),--cpu --max-parallel $(PARALLEL)) || exit 1; done
	@for spec in $(REPRODUCE_SPECS); do \
		$(LCBENCH) status runs/$$spec.yaml $(SPEC_ARGS) --wait --poll 5 | tail -n 3; done
	@for spec in $(REPRODUCE_SPECS); do \
		$(RUN_ENV) $(LCBENCH) measure runs/$$spec.yaml $(SPEC_ARGS) --threads 1 | tail -n 1 || exit 1; done
	@# the reports side by side once every quiet latency pass is done (each draws its figures twice)
	@pids=""; for spec in $(REPRODUCE_SPECS); do \
		$(LCBENCH) report runs/$$spec.yaml $(SPEC_ARGS) --out results/$$spec & pids="$$pids $$!"; done; \
		for pid in $$pids; do wait $$pid || exit 1; done

# `make search`: each spec's variants tuned by one protocol (`lcbench search`: the same number of trials each,
# scored on a validation split of the training data), the selections written to runs/<spec>.tuned.yaml, which
# `make reproduce` then uses (commit them); SEARCH_SPECS=fashion DATA=... for Fashion-MNIST
SEARCH_SPECS ?= digits
search: install
	@for spec in $(SEARCH_SPECS); do \
		$(RUN_ENV) $(LCBENCH) search runs/$$spec.yaml $(SPEC_ARGS) $(LAUNCH_ARGS) \
			$(if $(filter local,$(EXECUTOR)),--cpu --max-parallel $(PARALLEL)) || exit 1; done

# Fashion-MNIST (runs/fashion.yaml: every method, five independent replicates, the 10,000 test images):
# the four original IDX files from DATA, or Debian's dataset-fashion-mnist (installed here when missing and
# this is root on Debian)
FASHION_DEBIAN := /usr/share/datasets/fashion-mnist
reproduce-fashion: install
	@if [ -z "$(DATA)" ] && [ ! -f $(FASHION_DEBIAN)/train-images-idx3-ubyte.gz ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's dataset-fashion-mnist (30 MB)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || exit 2; \
		else \
			echo "reproduce-fashion: Fashion-MNIST is missing: install Debian's dataset-fashion-mnist (as root), or put the four original *-ubyte.gz files in a folder and run make reproduce-fashion DATA=that/folder"; exit 2; \
		fi; \
	fi
	@$(MAKE) --no-print-directory reproduce REPRODUCE_SPECS=fashion

# The paper's models on ImageNet: DATA=/path/to/imagenet (train/<wnid>/, val/<wnid>/); DRY=1 plans only
reproduce-imagenet: install
	@test -n "$(DATA)$(DRY)" || { echo "reproduce-imagenet: set DATA=/path/to/imagenet (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG), e.g. make reproduce-imagenet DATA=/datasets/imagenet EXECUTOR=slurm PROFILE=gpu; DRY=1 prints the plan and its GPU-hours"; exit 2; }
	$(LCBENCH) plan runs/imagenet.yaml data_root=$(DATA) output_root=$(OUT)
	@if [ -z "$(DRY)" ]; then \
		$(LCBENCH) launch runs/imagenet.yaml data_root=$(DATA) output_root=$(OUT) $(LAUNCH_ARGS) && \
		$(LCBENCH) status runs/imagenet.yaml data_root=$(DATA) output_root=$(OUT) --wait --poll 60 | tail -n 3; \
		$(LCBENCH) measure runs/imagenet.yaml data_root=$(DATA) output_root=$(OUT) --device $(MEASURE_DEVICE); \
		$(LCBENCH) report runs/imagenet.yaml data_root=$(DATA) output_root=$(OUT) --out results/imagenet; \
	fi

# The language half: DATA holds glue/<task>/ and wikitext-103-raw-v1/ (save_to_disk folders or the hub's
# parquet files), MODELS holds save_pretrained folders (bert-base-uncased/, gpt2/, distilgpt2/) with their
# tokenizers; DRY=1 plans only (with GPU-hours); ARGS adds overrides (e.g. ARGS="dataset=wikitext2")
reproduce-glue reproduce-wikitext: reproduce-%: install
	@test -n "$(DRY)" || test -n "$(DATA)" -a -n "$(MODELS)" || { echo "$@: set DATA=/path/to/data and MODELS=/path/to/models (see runs/$*.yaml), e.g. make $@ DATA=/datasets MODELS=/models EXECUTOR=slurm PROFILE=gpu; DRY=1 prints the plan and its GPU-hours"; exit 2; }
	$(LCBENCH) plan runs/$*.yaml $(if $(DATA),data_root=$(DATA)) $(if $(MODELS),pretrain.pretrained=$(MODELS)/{model}) output_root=$(OUT) $(ARGS)
	@if [ -z "$(DRY)" ]; then \
		LC="runs/$*.yaml data_root=$(DATA) pretrain.pretrained=$(MODELS)/{model} output_root=$(OUT) $(ARGS)"; \
		$(LCBENCH) launch $$LC $(LAUNCH_ARGS) && \
		$(LCBENCH) status $$LC --wait --poll 60 | tail -n 3; \
		$(LCBENCH) measure $$LC --device $(MEASURE_DEVICE); \
		$(LCBENCH) report $$LC --out results/$*; \
	fi

# The GPU specs rehearsed on this machine's GPU (random weights, synthetic batches, at most 8 minutes):
# lcbench's step against bare PyTorch, peak memory, slopes against their prediction -> results/bench/
gpu-check: install
	$(LCBENCH) rehearse runs/imagenet.yaml runs/glue.yaml runs/wikitext.yaml --budget 400 --device cuda \
		--out results/bench/rehearsal.json

bench: install
	@mkdir -p results/bench
	$(PY) -m lcbench.measurement.bench

# the verdict rule's type-I error and power on simulated records whose truth is known, every regime, beside
# the former rule's -> results/bench/calibration.{json,md,png} (`make test` runs the fast cases)
calibrate: install
	@mkdir -p results/bench
	$(PY) -m lcbench.analysis.calibration

# the documentation site (docs/, mkdocs) at http://127.0.0.1:8000, rebuilt on every change
docs: install $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

lint: install $(TEST_STAMP)
	$(VENV)/bin/ruff check lcbench tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
