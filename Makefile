# Two commands on a fresh machine: `make demo` and `make test` (each runs `setup` first).
# Windows without make: see README ("Windows").
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# MLproject commands say `python` and `mlflow models serve` starts `uvicorn`: both must be the venv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup setup-dev demo test bench clean

# `setup` is what runs the product and the demo; `setup-dev` adds the test tools (pytest, hypothesis,
# the dashboard), which the demo does not need: ~4 s of a fresh set-up's ~60 s.
setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# Re-installs only when pyproject.toml changes; `pip install -e` makes src/ importable. The venv's own
# pip is upgraded first: pip 23.2 (Python 3.11's) takes ~15 s longer over the same install.
# pip byte-compiles ~20,000 files one at a time (more than half of the install); compileall does the
# same on every core. Like pip it skips what does not compile (torch ships a Python 3.12-only file).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e .
	$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m demo_kit

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: setup-dev
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: setup
	$(PY) benchmarks/bench_validate.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_tune.py
	$(PY) benchmarks/bench_ddp.py

clean:
	rm -rf outputs data mlruns mlartifacts mlflow.db optuna.db
