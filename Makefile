# `make demo` and `make test` are the contract in README.md: each one creates
# .venv and installs what it needs by itself, then runs.
# The interpreter .venv is made from: the system's own /usr/bin/python3 when it is 3.11+ and can make a
# venv, else the first python3 on PATH. Debian's is built with PGO and LTO; a source-built one (pyenv's
# default build has no --enable-optimizations) ran pure Python 1.6-2x slower here, and the suite, the
# embedded proxy and ansible-playbook in the twin tests are mostly pure Python.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
            2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-stop test check lab clean

# (--clear: a venv left from another interpreter keeps its old python link otherwise.)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	SCRIPT=$(SCRIPT) scripts/demo

demo-stop: $(STAMP)
	scripts/demo-stop

# Two phases: everything but the load tests on three workers (pytest-xdist; tests/conftest.py keeps each
# module, and all SSH-lab tests, on one worker), then the load tests alone. Exit 5 is "nothing selected".
# Three workers on two cores: a quarter of the CPU sat idle with two (tests wait on sshd, ansible-playbook
# and Pilot's idle checks); with three the phase took 467 s instead of 579 s for the same CPU-seconds.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 3 --dist loadgroup -m "not exclusive" --durations=30 $(PYTEST_ARGS); a=$$?; \
	$(VENV)/bin/python -m pytest -m exclusive --durations=10 $(PYTEST_ARGS); b=$$?; \
	echo "make test: parallel phase exit $$a, exclusive phase exit $$b"; \
	{ [ $$a -eq 0 ] || [ $$a -eq 5 ]; } && { [ $$b -eq 0 ] || [ $$b -eq 5 ]; } && [ $$a -ne 5 -o $$b -ne 5 ]

check: $(STAMP)
	$(VENV)/bin/opsconsole --config config.example.yaml --check

# The SSH lab (root only): `make lab`, `make lab ACTION=status`, `make lab ACTION=down`.
lab: $(STAMP)
	$(VENV)/bin/python -m tests.lab $(or $(ACTION),up)

clean:
	rm -rf $(VENV) .demo build *.egg-info
