# Two commands for a fresh machine with only Python and Node: `make demo` and `make test`.
# Both set up .venv first (torch==2.13.0 before anything that depends on it).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup sandbox-deps browser-deps demo demo-improve test test-slow mutation lint hints-doc clean

setup: $(STAMP) sandbox-deps browser-deps

# torch first, then everything else under a constraint that keeps it (the console's
# JupyterLab extension is built by npm during this install: Node 18+ is needed)
$(STAMP): pyproject.toml labextension/package.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	echo torch==2.13.0 > $(VENV)/constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt \
	  -e '.[dev,openml,tf,console,notebook]'
	touch $(STAMP)

# Headless Chromium for the console's and the panel's browser tests (Debian's package).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null \
	      || echo "note: could not install chromium; the browser tests are skipped"; \
	  else echo "note: chromium not installed; the browser tests are skipped"; fi; \
	fi

# The sandbox's strongest layer is bubblewrap; install it where we may (root on Debian).
sandbox-deps:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null \
	      || echo "note: could not install bubblewrap; the sandbox falls back to process isolation"; \
	  else \
	    echo "note: bubblewrap not installed; the sandbox falls back to process isolation"; \
	  fi; \
	fi

# The main job: a real Keras model migrated to PyTorch on a dataset that ships with
# scikit-learn, until it provably matches (prints the parity table and where model.py went).
demo: setup
	$(BIN)/python examples/make_keras_model.py .autopilot/demo/breast_cancer_mlp.keras
	$(BIN)/autopilot migrate .autopilot/demo/breast_cancer_mlp.keras --data sklearn:breast_cancer \
	  --epochs 20 --batch-size 32
	$(BIN)/autopilot runs --limit 3
	@$(BIN)/jupyter labextension list 2>&1 | grep autopilot-lab
	@$(BIN)/jupyter server extension list 2>&1 | grep autopilot_lab
	@echo "console: $(BIN)/jupyter lab   (the Autopilot tab in the left sidebar shows this run)"

# The improve loop repairing a diverging recipe (NaN loss -> lower lr -> clip -> ...).
demo-improve: setup
	$(BIN)/autopilot improve examples/tabular_mlp.py:TabularMLP --data sklearn:diabetes \
	  --recipe examples/diverging_recipe.json --target baseline-0.05 --max-iters 6

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m autopilot_lab.hints | diff -u docs/hints.md - \
	  || (echo "docs/hints.md is stale: run 'make hints-doc'"; exit 1)
	$(BIN)/python -m pytest

# Mutation testing of the core (cosmic-ray, in a copy of the checkout): an hour or more here;
# not part of `make test`. Writes benchmarks/results/mutation.json and .md (see docs/testing.md).
mutation: setup
	$(BIN)/python -m benchmarks.mutation $(if $(MODULES),--modules $(MODULES),)

test-slow: setup
	$(BIN)/python -m pytest -m slow

hints-doc: $(STAMP)
	$(BIN)/python -m autopilot_lab.hints > docs/hints.md

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .autopilot .pytest_cache labextension/lib labextension/dist \
	  labextension/node_modules
