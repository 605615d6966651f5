# Two entry points: `make demo` and `make test`. Each creates .venv and installs what it needs.
# `make prepare-deps` adds the `prepare` extra (raw clinical exams); `make test` installs it too.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build here; CUDA users: make TORCH_SPEC=torch (or install torch in .venv first, see README).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PREPARE_STAMP := $(VENV)/.prepare-installed
DOCS_STAMP := $(VENV)/.docs-installed
PYTEST_ARGS ?=

.PHONY: demo test install prepare-deps docs bench bench-prepare clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

$(PREPARE_STAMP): $(STAMP) requirements-prepare.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-prepare.txt
	touch $(PREPARE_STAMP)

$(DOCS_STAMP): $(STAMP) requirements-docs.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-docs.txt
	touch $(DOCS_STAMP)

install: $(STAMP)

prepare-deps: $(PREPARE_STAMP)

demo: $(STAMP)
	$(BIN)/gliomaseg demo --out demo_out

test: $(STAMP) $(PREPARE_STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# The documentation site into site/ (pages generated from the CLI and benchmarks/results at build time).
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# All benchmarks (about 2 hours on 2 cores: bench_learning.py, four networks x two targets,
# and bench_real.py summarise, which scores the
# real-tumour cross-validation again from the fold archives in benchmarks/results/real_cv_folds/, training
# nothing; it needs ../shared/real-brats and skips without it. Training a setup's folds (hours each):
# bench_real.py run --work DIR --setups NAME, in the background; its docstring says how).
# On a GPU machine, run bench_train.py with its defaults.
REAL_WORK ?= ../real-cv-work
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_train.py --size 96 --batch-size 2 --steps 2
	$(BIN)/python benchmarks/bench_learning.py
	$(BIN)/python benchmarks/bench_real.py summarise --work $(REAL_WORK) --chosen cascadecarved64

bench-prepare: $(PREPARE_STAMP)
	$(BIN)/python benchmarks/bench_prepare.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache site docs/generated
