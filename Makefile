# fedquery: `make demo` runs the demo federation, `make test` runs the whole test suite.
# Both create a virtual environment in .venv on first use (Python >= 3.11 on PATH).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint policies clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fedquery needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedquery demo

test: $(STAMP) lint policies
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/lint-imports

policies: $(STAMP)
	$(BIN)/fedquery policy check policies/*.yaml policies/examples/*.yaml
	$(BIN)/fedquery policy test policies/tests/*.yaml

clean:
	rm -rf $(VENV) demo tests/.data .pytest_cache .hypothesis
