# threadcast: `make up` runs the whole system on embedded defaults; `make test` runs every test,
# against the embedded backends and the real servers that dev/services starts on loopback.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REAL_BACKENDS := kafka,rabbitmq,nchan,zookeeper,s3,storm,postgres
# storm after zookeeper: its cluster keeps its state there.
SERVICES := kafka rabbitmq nginx zookeeper browser s3 storm postgres
BENCH_SERVICES := kafka rabbitmq nginx
BENCH_ARGS ?=

.PHONY: up test services services-down bench clean

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

# Every bench scenario whose servers run: Kafka + RabbitMQ for `brokers`; the nginx service
# installs nginx + Nchan, which the `nchan` and `raw-nchan` scenarios start privately.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--rate max --duration 10".
bench: $(VENV)/.test
	dev/services up $(BENCH_SERVICES)
	env $$(dev/services env $(BENCH_SERVICES)) $(BIN)/threadcast bench $(BENCH_ARGS)

clean:
	dev/services down
	rm -rf $(VENV) .run .threadcast
