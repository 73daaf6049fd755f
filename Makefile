# robustlab: `make demo` and `make test` work on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
OCR_STAMP := $(VENV)/.installed-ocr
# Tesseract for the OCR task: the engine + English model, and what the tesserocr binding builds against
OCR_DEB := tesseract-ocr tesseract-ocr-eng libtesseract-dev libleptonica-dev pkg-config
PAGES_STAMP := $(VENV)/.installed-pages
PAGES_DEB := chromium
# espeak-ng for the audio task's synthesised corpus (soundfile and librosa come with the extra "audio")
AUDIO_DEB := espeak-ng
BENCH_STAMP := $(VENV)/.installed-bench
DOCS_STAMP := $(VENV)/.installed-docs
TORCH_PIN := torch==2.13.0
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test test-all bench docs mutation clean ocr-system pages-system audio-system

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[test,cluster,tensorboard,rl,audio,detection]"  # rl: gymnasium, SB3 (torch already pinned above)
	@$(MAKE) --no-print-directory audio-system
	touch $(STAMP)

# $(call apt-install,PACKAGES,WHAT SKIPS): Debian PACKAGES, installed when missing and possible (root or passwordless
# sudo, apt-get update first); otherwise one line saying how to install them and what skips meanwhile.
define apt-install
	@if dpkg -s $(1) >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: no apt-get; install $(1) (Debian names) yourself; meanwhile $(2)"; \
	else SUDO=""; if [ "$$(id -u)" != 0 ]; then if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; fi; \
	  if [ "$$SUDO" = none ]; then \
	    echo "note: not root: run 'sudo apt-get install -y $(1)'; meanwhile $(2)"; \
	  else ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(1) ) || \
	    echo "note: apt-get could not install $(1); $(2)"; fi; fi
endef

# Tesseract 5 + English data and its headers for the OCR task
ocr-system:
	$(call apt-install,$(OCR_DEB),the OCR task's Tesseract tests skip)

# Headless Chromium: tests/test_pages_chromium.py screenshots the report pages at 1000 and 1400 px
pages-system:
	$(call apt-install,$(PAGES_DEB),the page screenshot tests skip)

$(PAGES_STAMP): $(STAMP)
	@$(MAKE) --no-print-directory pages-system
	touch $(PAGES_STAMP)

# espeak-ng, the speech synthesiser of the audio task's corpus
audio-system:
	$(call apt-install,$(AUDIO_DEB),the audio task's tests that synthesise speech skip)

# The tesserocr binding (extra "ocr") after the system library; a failed build only skips the Tesseract tests.
$(OCR_STAMP): $(STAMP)
	@$(MAKE) --no-print-directory ocr-system
	$(BIN)/pip install --quiet -e ".[ocr]" || echo "note: tesserocr did not install (see above); the OCR task's Tesseract tests will skip"
	touch $(OCR_STAMP)

install: $(STAMP) $(OCR_STAMP) $(PAGES_STAMP)

demo: $(STAMP)
	$(BIN)/robustlab run configs/quickstart.yaml

# the docs extra too: tests/test_docs.py builds the site with --strict, as `make docs` does; Chromium for the page checks
test: $(STAMP) $(OCR_STAMP) $(DOCS_STAMP) $(PAGES_STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(OCR_STAMP) $(DOCS_STAMP) $(PAGES_STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

# Comparison libraries, benchmark-only. --no-deps: their metadata would pull torchvision (a CUDA torch)
# or old pins; what they import is already installed (plus six for ART).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet six
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1 adversarial-robustness-toolbox==1.20.1 pyautoattack==0.2.0 pyhessian==0.1
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py --out benchmarks/results.md
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/gpu.py --device cpu --small --out benchmarks/gpu_results_cpu.md

# The documentation site (mkdocs.yml, docs/): MkDocs + Material + mkdocstrings (extra "docs"); --strict makes a
# broken link, a missing page or an unresolved API reference fail the build. Output in build/site (git-ignored).
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d build/site

# Mutation testing over threat.py, objectives.py and attacks/ (settings in pyproject's [tool.mutmut]); not in
# CI: hours on two cores. MUTANTS narrows it, e.g. make mutation MUTANTS='robustlab.attacks.apgd*';
# MUTATION_JOBS mutants run at once (one thread each, at low priority).
MUTANTS ?=
MUTATION_JOBS ?= 1
mutation: $(STAMP)
	$(BIN)/pip install --quiet mutmut
	OMP_NUM_THREADS=1 ROBUSTLAB_TEST_THREADS=1 nice -n 19 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS); $(BIN)/mutmut results

clean:
	rm -rf $(VENV) runs .pytest_cache mutants build/site
