# Two entry points, both self-installing: `make run` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test

install: $(STAMP)

# constraints.txt is the full resolved set (see README "Dependencies"); the `dataclasses`
# backport that img2dataset pulls in shadows the stdlib and kills Prefect's server, so it goes.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip uninstall -y -q dataclasses
	touch $(STAMP)

run: install
	$(VENV)/bin/tamer run

test: install
	$(PY) -m pytest -q
