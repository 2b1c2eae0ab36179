# qmpgmem — two commands on a fresh machine: `make run` (the scenario library on the built-in
# guest) and `make test` (the test suite). Both set up what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A second, private QEMU from Debian sid (11.x) for the scenarios that need QEMU >= 11.0;
# optional: when it cannot be fetched those scenarios skip with the reason.
SID_QEMU_PREFIX := build/qemu-sid
SID_QEMU := $(SID_QEMU_PREFIX)/qemu-system-x86_64
SID_QEMU_ARG = $$(test -x $(SID_QEMU) && echo --qemu qemu-system-x86_64 --qemu $(SID_QEMU))

.PHONY: setup run test lint bench clean image sid-qemu lab lab-setup browser fleet fleet-setup

setup: $(STAMP) image sid-qemu

sid-qemu:
	@bash tools/fetch-qemu-sid.sh $(SID_QEMU_PREFIX) >/dev/null \
	  || echo "setup: warning: no QEMU 11.x from sid; scenarios needing it will skip" >&2

$(STAMP): pyproject.toml tools/install-qemu.sh
	bash tools/install-qemu.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

image: $(STAMP)
	$(BIN)/qmpgmem image build

run: setup
	$(BIN)/qmpgmem run scenarios/ --engine qemu --engine kvm $(SID_QEMU_ARG)

# Debian's chromium, for the test that opens `aggregate --html` in a headless browser; not in
# setup (about 100 MB), only for the tests. Without root it warns and that test skips.
browser:
	@bash tools/install-browser.sh

# The suite on every core (pytest-xdist), then the tests marked serial (signals timed
# against a run's phases, bounds a parallel load breaks) in a second pass, alone.
# TEST_JOBS=0: the first pass in one process too.
TEST_JOBS ?= auto
TEST_ENV = QMPGMEM_EXTRA_QEMU=$$(test -x $(SID_QEMU) && realpath $(SID_QEMU))
test: setup browser
	$(TEST_ENV) $(BIN)/pytest -q -ra -n $(TEST_JOBS) -m 'not serial' --junitxml=build/junit.xml
	$(TEST_ENV) $(BIN)/pytest -q -ra -p no:xdist -m serial --junitxml=build/junit-serial.xml

lint: setup
	$(BIN)/ruff check qmpgmem tests tests_lab tests_fleet bench
	$(BIN)/mypy

# The fleet tier (tests_fleet/, docs/fleet.md): deploy/ansible's playbook run by ansible-core over
# SSH against two sshd's on 127.0.0.2 and 127.0.0.3 of this machine, and the tmt plan run with
# `provision --how local`. openssh-server and a private venv build/fleet-tools with
# ansible-core and tmt come from tools/install-fleet-tools.sh. Not part of `make test`.
fleet-setup: setup browser
	bash tools/install-fleet-tools.sh

fleet: fleet-setup
	$(BIN)/pytest -q -ra tests_fleet --junitxml=build/junit-fleet.xml

# Optional: real private<->shared conversions in a nested L1 (docs/lab.md). The first call
# builds the lab kernel (15-25 min on 2 cores), later ones find it in ~/.cache/qmpgmem/lab.
lab-setup: setup
	bash tools/install-lab-deps.sh
	$(BIN)/qmpgmem lab kernel

lab: lab-setup
	$(BIN)/pytest -q -ra tests_lab --junitxml=build/junit-lab.xml

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build images/microguest/build
