# qmpgmem — two commands on a fresh machine: `make run` (the scenario library on the built-in
# guest) and `make test` (the test suite). Both set up what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint bench clean image

setup: $(STAMP) image

$(STAMP): pyproject.toml tools/install-qemu.sh
	bash tools/install-qemu.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

image: $(STAMP)
	$(BIN)/qmpgmem image build

run: setup
	$(BIN)/qmpgmem run scenarios/

test: setup
	$(BIN)/pytest -q -ra --junitxml=build/junit.xml

lint: setup
	$(BIN)/ruff check qmpgmem tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build images/microguest/build
