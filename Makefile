# Two commands on a fresh machine: `make demo` and `make test` (each runs `setup` first).
# Windows without make: see README ("Windows").
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# MLproject commands say `python` and `mlflow models serve` starts `uvicorn`: both must be the venv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# Re-installs only when pyproject.toml changes; `pip install -e` makes src/ importable.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m demo_kit

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: setup
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: setup
	$(PY) benchmarks/bench_validate.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_tune.py
	$(PY) benchmarks/bench_ddp.py

clean:
	rm -rf outputs data mlruns mlartifacts mlflow.db optuna.db
