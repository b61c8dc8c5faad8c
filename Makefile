# Developer entry points. `make demo` and `make test` each do their own set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := .tokensentry/demo
SHARED_REAL := ../shared/data/real

.PHONY: install demo test test-unit broker-start broker-stop bench clean

$(BIN)/tokensentry: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/tokensentry

demo: install
	bash deploy/demo.sh

test: install broker-start
	bash deploy/nginx/install.sh
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest tests/unit

broker-start:
	deploy/kafka/broker start

broker-stop:
	deploy/kafka/broker stop

bench: install
	$(BIN)/python benchmarks/bench_replay.py

clean:
	rm -rf $(VENV) .tokensentry
