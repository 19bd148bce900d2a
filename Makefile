# labctl — two commands on a fresh machine:
#   make demo   the offline smoke lab: validate, lock, fetch (generate) and plan it
#   make test   the test suite, Docker tests included
# Both install what they need: a project venv, a Docker engine, the local base images.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help install env test test-fast demo controls lint schema bench gpu-bundle clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "== installing labctl and its test tools into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(STAMP) ## Create the project venv with labctl installed

env: ## Bring up a Docker engine and the base images (installs docker.io as root when needed)
	@bash scripts/ensure-env.sh all

test: $(STAMP) env ## Run every test (Docker ones included)
	$(BIN)/pytest -q

test-fast: $(STAMP) ## Run the tests that need no Docker
	$(BIN)/pytest -q -m "not docker"

demo: $(STAMP) env ## The offline smoke round: lock, fetch, build, seal, run, unseal; then report + verify
	$(BIN)/labctl validate labs/smoke.yaml
	$(BIN)/labctl lock labs/smoke.yaml
	$(BIN)/labctl round labs/smoke.yaml
	@round=$$(ls -td rounds/smoke-*/ | head -n 1); \
	  $(BIN)/labctl report "$$round" && $(BIN)/labctl verify "$$round" && echo "report: $${round}report.md"

controls: $(STAMP) env ## Round 7's task with its controls: the oracle must be Complete, nop Failed
	$(BIN)/labctl lock labs/tag-manager.yaml
	$(BIN)/labctl round labs/tag-manager.yaml

lint: $(STAMP) ## ruff, the import-layer contract and mypy over labctl/ (settings: pyproject.toml)
	$(BIN)/ruff check labctl tests scripts benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

schema: $(STAMP) ## Regenerate lab.schema.json from the spec
	$(BIN)/labctl schema --write lab.schema.json

bench: $(STAMP) ## Benchmarks (ratios against a baseline measured in the same run)
	@# every benchmark runs, whatever an earlier one said: a goal missed (or a benchmark broken) is named
	@# at the end and makes the target fail, never hides the benchmarks after it
	@missed=""; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || missed="$$missed $$b"; done; \
	if [ -n "$$missed" ]; then echo "goal missed or benchmark failed:$$missed"; exit 1; fi

gpu-bundle: $(STAMP) ## Stage .gpu-bundle/ (pinned llama.cpp source + wheels) for scripts/gpu-measure.sh
	bash scripts/gpu-bundle.sh

clean: ## Remove the venv and caches (not the model store)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
