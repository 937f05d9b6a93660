# kisi-gateway: the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
CLIENTS_JS := tests/clients/js
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
SRC := $(wildcard layers functions local bench tests)
TYPED := $(wildcard layers/kisi_gateway/kisi_gateway functions local bench)

.PHONY: help venv clients run demo bench soak test lint validate build deploy clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/dev.txt requirements/clients.txt layers/kisi_gateway/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	@touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.txt
	@touch $@

# Kisi's JavaScript client for the e2e tests, from the committed lock; again only when the lock
# is newer than the last install.
$(CLIENTS_JS)/node_modules/.installed: $(CLIENTS_JS)/package-lock.json $(CLIENTS_JS)/package.json
	npm ci --prefix $(CLIENTS_JS) --no-audit --no-fund
	@touch $@

venv: $(VENV)/.installed ## Build .venv from the exact pins

clients: $(CLIENTS_JS)/node_modules/.installed ## Install Kisi's JS client for the e2e tests (npm ci)

run: $(VENV)/.installed ## The gateway on 127.0.0.1:3000 with moto and the Kisi simulator
	$(PY) -m local

demo: $(VENV)/.installed ## A scripted scenario against a fresh local stack: table + timeline plot
	$(PY) -m local.demo

bench: $(VENV)/.installed ## Simulation, real-time run, cold start, CPU cost -> docs/benchmarks.md
	PYTHONPATH=layers/kisi_gateway $(PY) -m bench

soak: $(VENV)/.installed ## 5 minutes at 4 req/s with faults on the local stack; prints the figures
	$(PY) -m local.soak

lint: $(VENV)/.installed ## ruff, mypy (strict on the layer), cfn-lint on the template
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/mypy $(TYPED)
	$(VENV)/bin/cfn-lint template.yaml
	$(PY) -m local.lint_translated template.yaml

test: lint clients ## Lint, then every test tier (unit, integration, e2e)
	$(VENV)/bin/pytest -q -n 2 --dist loadgroup

validate: $(SAM_VENV)/.installed ## sam validate --lint (offline, no credentials)
	$(SAM_VENV)/bin/sam validate --lint --region $(AWS_DEFAULT_REGION)

build: $(SAM_VENV)/.installed ## sam build without Docker (makefile builds for python3.12)
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" $(SAM_VENV)/bin/sam build --region $(AWS_DEFAULT_REGION)

deploy: build ## sam deploy --guided (asks for stack name, region, parameters)
	$(SAM_VENV)/bin/sam deploy --guided

clean: ## Remove build output and caches (keeps the virtual environments)
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache .hypothesis docs/*.tmp
	find . -name '__pycache__' -type d -not -path './.venv*' -prune -exec rm -rf {} +
