# Developer entry points. `make demo` and `make test` each do their own set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := .tokensentry/demo
SHARED_REAL := ../shared/data/real
GO ?= go
NPM ?= npm
# Validators the deployment tests run (tests/unit/test_deploy_*.py), installed into $(VENV).
PROMTOOL_VERSION := v0.316.0
KEDA_MODELS_VERSION := 2.0.0
PROMTOOL_STAMP := $(VENV)/.promtool-$(PROMTOOL_VERSION)
KEDA_MODELS_STAMP := $(VENV)/.keda-models-$(KEDA_MODELS_VERSION)

.PHONY: install tools demo test test-unit broker-start broker-stop bench clean

$(BIN)/tokensentry: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/tokensentry

# promtool from the Prometheus module (v0.316.0 is Prometheus 3.16.0) and composecheck
# (deploy/compose/composecheck, on compose-go) need Go; the KEDA models need npm.
$(PROMTOOL_STAMP): | $(BIN)/tokensentry
	GOBIN=$(abspath $(BIN)) $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)
	touch $@

$(BIN)/composecheck: deploy/compose/composecheck/main.go deploy/compose/composecheck/go.mod deploy/compose/composecheck/go.sum | $(BIN)/tokensentry
	cd deploy/compose/composecheck && GOBIN=$(abspath $(BIN)) $(GO) install .

$(KEDA_MODELS_STAMP): | $(BIN)/tokensentry
	$(NPM) install --prefix $(VENV)/node --no-audit --no-fund --silent @kubernetes-models/keda@$(KEDA_MODELS_VERSION)
	touch $@

tools: install $(PROMTOOL_STAMP) $(BIN)/composecheck $(KEDA_MODELS_STAMP)
	bash deploy/nginx/install.sh

demo: install
	bash deploy/demo.sh

test: install tools broker-start
	$(BIN)/pytest

test-unit: install tools
	$(BIN)/pytest tests/unit

broker-start:
	deploy/kafka/broker start

broker-stop:
	deploy/kafka/broker stop

bench: install
	$(BIN)/python benchmarks/bench_replay.py

clean:
	rm -rf $(VENV) .tokensentry
