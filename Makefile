# cxr-gan — every target creates .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cxrlib-installed

.PHONY: install test test-unit test-notebooks demo lab exercises bench pretrained test-browser lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[dev,dicom,medmnist]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cxr-gan)" >/dev/null
	touch $(STAMP)

## make test: unit and CLI tests, then every notebook run top to bottom by nbval in the smoke budget.
test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest -q tests

test-notebooks: $(STAMP)
	CXRLIB_SMOKE=1 MPLBACKEND=Agg $(PY) -m pytest -q --nbval-lax --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider notebooks/

## make demo: phantom chest X-rays -> a short GAN run on this machine -> runs/demo/
demo: $(STAMP)
	$(PY) -m cxrlib demo --out runs/demo

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

exercises: $(STAMP)
	$(PY) -m cxrlib.exercises build notebooks exercises

bench: $(STAMP)
	$(PY) -m cxrlib bench

lint: $(STAMP)
	$(VENV)/bin/ruff check cxrlib tests benchmarks

clean:
	rm -rf runs .cache .pytest_cache
