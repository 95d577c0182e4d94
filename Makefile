# Two commands on a fresh machine (only Python 3.10+ needed):
#   make run    the main job (configs/quickstart.py) on built-in synthetic data, into $(WORKDIR)
#   make test   the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/quickstart

.PHONY: install run annotate lint format test bench clean device-wheels device-smoke

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m launch.run --config configs/quickstart.py --workdir $(WORKDIR)

# The click-and-learn app on built-in data (reuses `make run`'s model, else pre-trains it first);
# open the URL it prints (remote machine: ssh -N -L 8765:127.0.0.1:8765 user@host).
annotate: install
	$(PY) -m launch.run --config configs/annotate.py --workdir runs/annotate

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q tests

# The GPU machine's check (benchmarks/README.md, "Device check"): the cp312 wheels it lacks into .whl/, and the
# same script on CPU with tiny sizes (every phase; the test suite runs a few of them).
device-wheels: install
	$(PY) benchmarks/device_check.py wheels --dest .whl

device-smoke: install
	JAX_PLATFORMS=cpu PYTHON=$(PY) OUT=runs/device_smoke bash benchmarks/device_check.sh --smoke

clean:
	rm -rf $(VENV) runs
