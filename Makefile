# Enterprise chat: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := common broker gateway inference_worker archiver auth devstack chaos $(wildcard bench)

run: $(STAMP) services
	@bash scripts/ensure-services.sh haproxy prometheus
	$(PY) -m devstack

.PHONY: run help install test lint typecheck pytest bench contract fuzz services clean chaos chaos-short

help:
	@echo "make run     - run the whole system locally (see README)"
	@echo "make test    - install what is needed, then ruff, mypy and the test suite"
	@echo "make bench   - load test: the pipeline vs. the simulator directly; ARGS=\"--help\" for the modes"
	@echo "make chaos   - fault suite: every fault of issue 13 under streamed load (short form: make chaos-short)"
	@echo "make fuzz    - property-based API test (schemathesis) against the real services, 10 min"
	@echo "make lint    - ruff only"
	@echo "make deploy  - production topology with Docker Compose (./deploy_enterprise.sh; also: make up)"
	@echo "make ps | make logs [svc=gateway-1] | make scale WORKERS=n GATEWAYS=n | make backup | make down"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

services:
	@bash scripts/ensure-services.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(SOURCES)

pytest: $(STAMP) services test-tools
	$(VENV)/bin/pytest $(PYTEST_ARGS)

CHAOS ?= short
test: lint typecheck pytest $(if $(CHAOS),chaos-short)

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
	$(if $(findstring --profile,$(ARGS)),@test -x $(VENV)/bin/py-spy || $(PY) -m pip install --quiet py-spy)
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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# haproxy for tests/deploy (installed when missing and root; the tests skip without it).
test-tools:
	@bash scripts/ensure-services.sh haproxy prometheus shellcheck

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
