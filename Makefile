# threadcast: `make up` runs the whole system on embedded defaults; `make test` runs every test,
# against the embedded backends and the real servers that dev/services starts on loopback.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REAL_BACKENDS := kafka,rabbitmq,nchan
SERVICES := kafka rabbitmq nginx browser

.PHONY: up test services services-down bench latency clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.base

up: $(VENV)/.base
	$(BIN)/threadcast up

services: $(VENV)/.test
	dev/services up $(SERVICES)

services-down:
	dev/services down

test: services
	env $$(dev/services env $(SERVICES)) THREADCAST_TEST_BACKENDS=$(REAL_BACKENDS) $(BIN)/pytest -p no:cacheprovider

latency: $(VENV)/.base
	$(BIN)/python scripts/latency.py

clean:
	dev/services down
	rm -rf $(VENV) .run .threadcast
