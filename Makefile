# `make demo` and `make test` are the contract in README.md: each one creates
# .venv and installs what it needs by itself, then runs.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-stop test check lab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	SCRIPT=$(SCRIPT) scripts/demo

demo-stop: $(STAMP)
	scripts/demo-stop

test: $(STAMP)
	$(VENV)/bin/python -m pytest --durations=30 $(PYTEST_ARGS)

check: $(STAMP)
	$(VENV)/bin/opsconsole --config config.example.yaml --check

# The SSH lab (root only): `make lab`, `make lab ACTION=status`, `make lab ACTION=down`.
lab: $(STAMP)
	$(VENV)/bin/python -m tests.lab $(or $(ACTION),up)

clean:
	rm -rf $(VENV) .demo build *.egg-info
