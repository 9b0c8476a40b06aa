# Two entry points, both self-installing: `make run` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test

install: $(STAMP)

# constraints.txt is the full resolved set (see README "Dependencies"); the `dataclasses`
# backport that img2dataset pulls in shadows the stdlib and kills Prefect's server, so it goes.
# uv installs the same set as pip in about 2 min here, bytecode included (pip: 3.5-5.5 min, most
# of a fresh `make run`); its cache sits inside the venv, on the same disk, so its files are hard
# links. It compiles the bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set (this
# machine) nothing is compiled later, and every process (each Ray worker) compiles its imports anew.
UV := $(VENV)/bin/uv
export UV_CACHE_DIR ?= $(abspath $(VENV))/.uv-cache
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "uv==0.13.10"
	$(UV) pip install --python $(PY) -q --compile-bytecode -c constraints.txt -e ".[test]"
	$(UV) pip uninstall --python $(PY) -q dataclasses
	touch $(STAMP)

run: install
	$(VENV)/bin/tamer run

test: install
	$(PY) -m pytest -q
