# robustlab: `make demo` and `make test` work on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
TORCH_PIN := torch==2.13.0
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test test-all bench mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/robustlab run configs/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

# Comparison libraries, benchmark-only. --no-deps: their metadata would pull torchvision (a CUDA torch)
# or old pins; what they import is already installed (plus six for ART).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet six
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1 adversarial-robustness-toolbox==1.20.1 pyautoattack==0.2.0
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py --out benchmarks/results.md

# Mutation testing over threat.py, objectives.py and attacks/ (settings in pyproject's [tool.mutmut]); not in
# CI: hours on two cores. MUTANTS narrows it, e.g. make mutation MUTANTS='robustlab.threat*'
MUTANTS ?=
mutation: $(STAMP)
	$(BIN)/pip install --quiet mutmut
	$(BIN)/mutmut run $(MUTANTS); $(BIN)/mutmut results

clean:
	rm -rf $(VENV) runs .pytest_cache mutants
