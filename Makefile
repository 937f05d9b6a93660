# kisi-gateway: the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
MUTATION_VENV := .venv-mutation
PY := $(VENV)/bin/python
CLIENTS_JS := tests/clients/js
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
# The Lambda runtime's Python, major.minor: template.yaml's Runtime must be python$(LAMBDA_PYTHON)
# (tests/unit/test_build_runtime.py checks it). `make build` ships bytecode compiled by exactly
# this version, because a .pyc is read only by the Python version that wrote it.
export LAMBDA_PYTHON := 3.12
# That interpreter: LAMBDA_PYTHON_BIN if set, else python3.12 on PATH, else pyenv's installs
# ($$PYENV_ROOT/versions/3.12.*, newest first). Prints its path, or fails saying what to do.
FIND_LAMBDA_PYTHON = \
	for py in $${LAMBDA_PYTHON_BIN:-python$(LAMBDA_PYTHON) $$(ls -d \
		"$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/$(LAMBDA_PYTHON).*/bin/python$(LAMBDA_PYTHON) \
		2>/dev/null | sort -rV)}; do \
		found=$$("$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2], sys.executable)' \
			2>/dev/null) || continue; \
		if [ "$${found%% *}" = "$(LAMBDA_PYTHON)" ]; then echo "$${found\#* }"; exit 0; fi; \
	done; \
	echo "error: no Python $(LAMBDA_PYTHON) found (LAMBDA_PYTHON_BIN, python$(LAMBDA_PYTHON) on PATH," \
		"pyenv versions). The layer ships bytecode for Lambda's python$(LAMBDA_PYTHON), which only" \
		"that version can write: install it (e.g. 'pyenv install $(LAMBDA_PYTHON)'), point" \
		"LAMBDA_PYTHON_BIN at one, or build without bytecode: make build LAMBDA_BYTECODE=0" >&2; \
	exit 1
SRC := $(wildcard layers functions local kisi_sim scenarios bench ops tools tests)
TYPED := $(wildcard layers/kisi_gateway/kisi_gateway functions local kisi_sim scenarios bench ops tools)

.PHONY: help venv clients run demo bench soak test lint mutation validate build lambda-python deploy clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Two steps, so a first `make run` installs only what running needs (local.txt: the runtime
# pins, moto's server, samtranslator, cfn-lint); test, lint, bench, demo and soak add dev.txt.
# --no-compile: pip would compile all ~6,800 modules of local.txt one by one, most of which
# `make run` never imports; Python compiles what it imports. The dev step then compiles the whole
# venv, in parallel, for the test processes.
PIP_INSTALL := $(VENV)/bin/pip install --quiet --disable-pip-version-check
$(VENV)/.installed-local: requirements/pip.txt requirements/local.txt requirements/runtime.txt \
		layers/kisi_gateway/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements/pip.txt
	$(PIP_INSTALL) --no-compile -r requirements/local.txt
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-local requirements/dev.txt requirements/clients.txt
	$(PIP_INSTALL) --no-compile -r requirements/dev.txt
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
	@touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.txt
	@touch $@

# mutmut and its own dependencies stay out of .venv (and out of `make test`): a venv of their
# own, with everything the tests need (requirements/mutation.txt includes dev.txt).
$(MUTATION_VENV)/.installed: requirements/pip.txt requirements/mutation.txt requirements/dev.txt \
		requirements/local.txt requirements/runtime.txt layers/kisi_gateway/requirements.txt
	@test -x $(MUTATION_VENV)/bin/python || $(PYTHON) -m venv $(MUTATION_VENV)
	$(MUTATION_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/pip.txt
	$(MUTATION_VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile \
		-r requirements/mutation.txt
	@touch $@

# Kisi's JavaScript client for the e2e tests, from the committed lock; only when the lock
# is newer than the last install.
$(CLIENTS_JS)/node_modules/.installed: $(CLIENTS_JS)/package-lock.json $(CLIENTS_JS)/package.json
	npm ci --prefix $(CLIENTS_JS) --no-audit --no-fund
	@touch $@

venv: $(VENV)/.installed-dev ## Build .venv from the exact pins

clients: $(CLIENTS_JS)/node_modules/.installed ## Install Kisi's JS client for the e2e tests (npm ci)

run: $(VENV)/.installed-local ## The gateway on 127.0.0.1:3000 with moto and the Kisi simulator
	$(PY) -m local

demo: $(VENV)/.installed-dev ## A scripted scenario against a fresh local stack: table + timeline plot
	$(PY) -m scenarios.demo

bench: $(VENV)/.installed-dev ## Simulation, real-time run, cold start, CPU cost -> docs/benchmarks.md
	PYTHONPATH=layers/kisi_gateway $(PY) -m bench

soak: $(VENV)/.installed-dev ## 5 minutes at 4 req/s with faults on the local stack; prints the figures
	$(PY) -m scenarios.soak

lint: $(VENV)/.installed-dev ## ruff, mypy (strict on the layer), cfn-lint on the template
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/mypy $(TYPED)
	$(VENV)/bin/cfn-lint template.yaml
	$(PY) -m local.lint_translated template.yaml

test: lint clients ## Lint, then every test tier (unit, integration, e2e)
	$(VENV)/bin/pytest -q -n 2 --dist loadgroup

# Not part of `make test`: over an hour on 2 cores (about 1,500 mutants). See tools/mutation.py.
mutation: $(MUTATION_VENV)/.installed ## Mutation testing (mutmut) of the decisions and runners
	$(MUTATION_VENV)/bin/python -m tools.mutation

validate: $(SAM_VENV)/.installed ## sam validate --lint (offline, no credentials)
	$(SAM_VENV)/bin/sam validate --lint --region $(AWS_DEFAULT_REGION)

# Bytecode ships with every artifact: /opt and /var/task are read-only on Lambda, so a module
# without it is compiled from source on every cold start and the result thrown away. The
# layer's and the functions' Makefiles run $(LAMBDA_COMPILE) on what they ship: Python
# $(LAMBDA_PYTHON)'s compileall (a .pyc is read only by the version that wrote it), in unchecked-hash
# mode, because sam zips every file dated 1980-01-01 (samcli's make_zip_with_permissions sets no
# date_time), so a timestamp .pyc would never match its source on Lambda and be ignored, and the
# artifact never changes after the build, so hashing the source at each import (checked-hash)
# would be wasted work.
build: $(SAM_VENV)/.installed ## sam build without Docker; ships bytecode compiled by Python 3.12
	@if [ "$(LAMBDA_BYTECODE)" = 0 ]; then \
		echo "WARNING: LAMBDA_BYTECODE=0: the artifacts carry no bytecode, so every Lambda cold" \
			"start compiles the layer from source (/opt is read-only, nothing is cached)" >&2; \
		LAMBDA_COMPILE="echo LAMBDA_BYTECODE=0, no bytecode for"; \
	else \
		lambda_python="$$($(FIND_LAMBDA_PYTHON))" || exit 1; \
		echo "bytecode for python$(LAMBDA_PYTHON) compiled by $$lambda_python"; \
		LAMBDA_COMPILE="$$lambda_python -m compileall -q -j 0 --invalidation-mode unchecked-hash"; \
	fi; \
	export LAMBDA_COMPILE; \
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" $(SAM_VENV)/bin/sam build --region $(AWS_DEFAULT_REGION)

lambda-python: ## Print the Python 3.12 interpreter that `make build` compiles bytecode with
	@$(FIND_LAMBDA_PYTHON)

deploy: build ## sam deploy --guided (asks for stack name, region, parameters)
	$(SAM_VENV)/bin/sam deploy --guided

clean: ## Remove build output and caches (keeps the virtual environments)
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache .hypothesis docs/*.tmp .mutation
	find . -name '__pycache__' -type d -not -path './.venv*' -prune -exec rm -rf {} +
