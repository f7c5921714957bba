# The single entry point: `make run` starts the local stack, `make test` runs the whole suite.
# Both create the virtualenv and install what they need on first use.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAGE ?= dev
INSTALLED := $(VENV)/.installed
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install system-deps run test test-unit lint fmt bench synth deploy admin reset clean

help:
	@echo "make run      start the local stack (API on http://127.0.0.1:8000, state in .data/)"
	@echo "make test     install what the tests need and run the whole suite"
	@echo "make lint     ruff + mypy"
	@echo "make bench    run the benchmarks in benchmarks/"
	@echo "make synth    synthesize the CDK stack for STAGE (default dev) into cdk.out/"
	@echo "make deploy   deploy STAGE (e.g. make deploy STAGE=prod) with the CDK CLI"
	@echo "make admin    create the first admin account of the local stack (make admin USER=alice)"
	@echo "make reset    wipe the local runtime's saved state (.data/)"

$(PY):
	@echo "==> creating the virtualenv in $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when a requirements file changed since the last install.
$(INSTALLED): requirements.txt requirements-dev.txt streamer/requirements.txt | $(PY)
	@echo "==> installing Python packages (first run takes a minute or two)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(INSTALLED)

# Debian packages the tests use, installed only when missing (root, as on a fresh machine).
# Node.js runs the CDK's jsii runtime during synthesis; opentracker and aria2 (aria2c) are the real tracker
# and seeder of the tracker tests and benchmark. One `apt-get update` for whatever is missing.
system-deps:
	@missing=""; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v opentracker >/dev/null 2>&1 || missing="$$missing opentracker"; \
	command -v aria2c >/dev/null 2>&1 || missing="$$missing aria2"; \
	if [ -n "$$missing" ]; then echo "==> installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

run: install
	$(PY) -m infra.local

test: install system-deps
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy chalicelib infra streamer app.py benchmarks

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The stream benchmark's peers (webtorrent-cli, peerflix) come from the npm registry: npm is installed when missing.
bench: install system-deps
	@command -v npm >/dev/null 2>&1 || { echo "==> installing npm"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	@set -e; for bench in benchmarks/*.py; do echo "==> $$bench"; $(PY) $$bench; done

synth: install system-deps
	STAGE=$(STAGE) $(PY) -m infra.cdk.app synth

deploy: install system-deps
	npx --yes aws-cdk@2 deploy --app "$(PY) -m infra.cdk.app" -c stage=$(STAGE) --require-approval broadening

# The first admin account of the local stack (`make run` must be running): `make admin USER=alice` asks for
# the password. For a stage on AWS: STAGE=prod python -m chalicelib.auth.cli create-admin alice (credentials set).
admin: install
	@if [ "$(origin USER)" != "command line" ]; then echo "usage: make admin USER=<name>"; exit 2; fi
	@AWS_ENDPOINT_URL=http://127.0.0.1:$${EMULATOR_PORT:-8001} STAGE=$${STAGE:-dev} AWS_REGION=us-east-1 \
		AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local $(PY) -m chalicelib.auth.cli create-admin "$(USER)"

reset:
	rm -rf .data
	@echo "local state wiped (.data/)"

clean:
	rm -rf cdk.out chalice.out .pytest_cache .mypy_cache .ruff_cache
