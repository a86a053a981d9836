# Enterprise chat: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := common broker gateway inference_worker archiver auth devstack chaos $(wildcard bench) deploy/kubernetes/validate.py examples

run: $(STAMP) services web
	@bash scripts/ensure-services.sh haproxy prometheus
	$(PY) -m devstack

.PHONY: run help install lock test lint typecheck pytest bench contract fuzz services clean chaos chaos-short web

help:
	@echo "make run     - run the whole system locally (see README)"
	@echo "make test    - install what is needed, then ruff, mypy and the test suite"
	@echo "make bench   - load test: the pipeline vs. the simulator directly; ARGS=\"--help\" for the modes"
	@echo "make chaos   - fault suite: every fault of issue 13 under streamed load (short form: make chaos-short)"
	@echo "make fuzz    - property-based API test (schemathesis) against the real services, 10 min"
	@echo "make lint    - ruff only"
	@echo "make deploy  - production topology with Docker Compose (./deploy_enterprise.sh; also: make up)"
	@echo "make ps | make logs [svc=gateway] | make scale WORKERS=n GATEWAYS=n | make backup | make down"

# -- install: the locked environment (uv.lock; README, "Dependencies") ------------------------------
# .venv holds exactly the versions in uv.lock (runtime + the dev extra; the Dockerfile takes the
# runtime part of the same lock). uv itself is pinned here and kept in .tools/, outside the synced
# environment. After editing dependencies in pyproject.toml: `make lock`, and commit uv.lock.
UV_VERSION := 0.13.8
UV_HOME := .tools/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
UV_RUN := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON=$(PYTHON) UV_PYTHON_DOWNLOADS=never $(UV)
LOCK_STALE := uv.lock does not match pyproject.toml: run make lock (and commit uv.lock)

$(UV):
	@rm -rf $(UV_HOME)
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(UV_RUN) lock --check --quiet || { echo "error: $(LOCK_STALE)" >&2; exit 1; }
	$(UV_RUN) sync --frozen --extra dev --quiet
	@touch $(STAMP)

install: $(STAMP)

# Re-resolve pyproject.toml into uv.lock: keeps every locked version that still satisfies it, adds
# what is new. `make lock ARGS=--upgrade` (or ARGS="--upgrade-package aiohttp") moves versions on.
# A uv.lock left with merge-conflict markers is first set back to this branch's side (HEAD): the
# re-resolution then takes in the merged pyproject.toml, so one `make lock` settles the conflict.
lock: | $(UV)
	@if grep -q '^<<<<<<< ' uv.lock 2>/dev/null; then \
		echo "uv.lock has conflict markers: starting from HEAD's and re-resolving"; \
		git checkout HEAD -- uv.lock 2>/dev/null || rm -f uv.lock; \
	fi
	$(UV_RUN) lock $(ARGS)
	@$(MAKE) --no-print-directory install
# -- end install ----------------------------------------------------------------------------------
# The chat page's npm libraries (package-lock.json) copied into gateway/web/vendor/ (README, Chat page).
WEB_STAMP := gateway/web/vendor/.installed
web: $(WEB_STAMP)
$(WEB_STAMP): package.json package-lock.json scripts/build-web.sh
	@bash scripts/build-web.sh
	@touch $(WEB_STAMP)

services:
	@bash scripts/ensure-services.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(SOURCES)

pytest: $(STAMP) services test-tools web
	$(VENV)/bin/pytest $(PYTEST_ARGS)

CHAOS ?= short
test: lint typecheck k8s-validate pytest $(if $(CHAOS),chaos-short)

# The fault suite (chaos/, README "Fault injection"): a private stack, broker and Redis on free
# ports. `make chaos` is the full form (~6 min); `make test` runs the short form (~2 min) unless
# CHAOS is empty (`make test CHAOS=`). ARGS="--json", "--only S3", "--keep-logs" ...
chaos: $(STAMP) services
	@bash scripts/ensure-services.sh haproxy rabbitmq-server redis-server
	$(PY) -m chaos $(ARGS)

chaos-short: $(STAMP) services
	@bash scripts/ensure-services.sh haproxy rabbitmq-server redis-server
	$(PY) -m chaos --short $(ARGS)

# make bench ARGS="..." (README, Benchmarks): --via-haproxy needs haproxy, --profile needs py-spy.
bench: $(STAMP) services
	@bash scripts/ensure-services.sh haproxy
	$(if $(findstring --profile,$(ARGS)),@test -x $(VENV)/bin/py-spy || $(UV) pip install --python $(PY) --quiet py-spy)
	$(PY) -m bench $(ARGS)

contract: $(STAMP)
	$(PY) -m broker.contract
	$(PY) -m gateway.contract

# The property-based API test (tests/gateway/test_http_fuzz.py) run longer than in `make test`:
# FUZZ_SECONDS per service, FUZZ_MAX_EXAMPLES cases per operation, FUZZ_SEED to replay a run.
FUZZ_SECONDS ?= 600
FUZZ_MAX_EXAMPLES ?= 1000
fuzz: $(STAMP) services
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) \
		$(VENV)/bin/pytest tests/gateway/test_http_fuzz.py -p no:cacheprovider -rA $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache node_modules gateway/web/vendor

# haproxy for tests/deploy, chromium for tests/web (installed when missing and root; the tests
# skip without them); playwright drives Debian's chromium (never `playwright install`).
test-tools:
	@bash scripts/ensure-services.sh haproxy prometheus shellcheck chromium

# -- production topology: Docker Compose (compose/, haproxy/, deploy_enterprise.sh) -----------------
.PHONY: deploy up down ps logs scale backup test-tools
MANAGE := bash compose/manage.sh

deploy up:
	./deploy_enterprise.sh

down:
	$(MANAGE) down

ps:
	$(MANAGE) ps

logs:
	$(MANAGE) logs $(svc)

scale:
	$(MANAGE) scale "$(WORKERS)" "$(GATEWAYS)"

backup:
	$(MANAGE) backup

# -- Kubernetes (deploy/kubernetes: Kustomize base + overlays; README, "Kubernetes") ----------------
# Renders every kustomization with the locked kubectl and validates it offline: Kubernetes' schemas
# (kubernetes-validate) and the KEDA / prometheus-operator CRD schemas (deploy/kubernetes/validate.py).
.PHONY: k8s-validate
k8s-validate: $(STAMP)
	$(PY) deploy/kubernetes/validate.py
