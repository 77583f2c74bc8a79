# cxr-gan — every target creates .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cxrlib-installed

.PHONY: install test test-unit test-notebooks demo lab exercises badges bench pretrained pretrained-conditional pretrained-cyclegan pretrained-style lessons test-browser lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[dev,dicom,medmnist,privacy,diffusion]"
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

## make exercises: student versions of notebooks/ in exercises/ (solutions -> stubs, no outputs)
exercises: $(STAMP)
	$(PY) -m cxrlib.exercises build notebooks exercises

## make badges: rewrite every notebook's Colab/Binder badges and setup cell from pyproject.toml [tool.cxr-gan]
badges: $(STAMP)
	$(PY) tools/notebook_opening.py

bench: $(STAMP)
	$(PY) -m cxrlib bench

## make pretrained: reproduce cxrlib/assets/course_phantom_64.pt (course preset, 64-px phantoms, fixed seed and steps;
## figures in benchmarks/RESULTS.md). On a busy machine CXRLIB_THREADS=1 is faster.
PRETRAINED_STEPS ?= 3000
pretrained: $(STAMP)
	rm -rf runs/pretrained
	$(PY) -m cxrlib train --data phantom --n-images 2000 --size 64 --preset course --steps $(PRETRAINED_STEPS) \
		--seed 0 --checkpoint-every 500 --sample-every 250 --log-every 50 --out runs/pretrained --quiet
	$(PY) -c "from cxrlib.train import export_pretrained as e; print(e('runs/pretrained', 'cxrlib/assets/course_phantom_64.pt'))"

## make pretrained-conditional: reproduce cxrlib/assets/conditional_phantom_64.pt -- the `make pretrained` recipe, data
## and seed as a conditional GAN (normal / pneumonia; notebook 07): 3,000 steps, then 3,000 more at the same learning
## rates with fresh Adam moments (`finetune --lr-scale 1`; the class is learnt slowly: 82 % → 92 % pneumonia).
pretrained-conditional: $(STAMP)
	rm -rf runs/pretrained-conditional runs/pretrained-conditional-more
	$(PY) -m cxrlib train --data phantom --n-images 2000 --size 64 --preset course --conditional \
		--steps $(PRETRAINED_STEPS) --seed 0 --checkpoint-every 500 --sample-every 250 --log-every 50 \
		--out runs/pretrained-conditional --quiet
	$(PY) -m cxrlib finetune --ckpt runs/pretrained-conditional --data phantom --n-images 2000 --lr-scale 1 \
		--d-lr-scale 1 --steps $(PRETRAINED_STEPS) --out runs/pretrained-conditional-more --quiet
	$(PY) -c "from cxrlib.train import export_pretrained as e; \
		print(e('runs/pretrained-conditional-more', 'cxrlib/assets/conditional_phantom_64.pt'))"

## make pretrained-cyclegan: reproduce cxrlib/assets/cyclegan_phantom_64.pt -- CycleGAN normal ↔ pneumonia on 1,000
## 64-px phantoms (the cyclegan preset at width 0.25 with U-Net generators and 32-channel PatchGANs, fixed seed and
## steps, ~10 min on a 2-core AVX2 CPU; notebook 08, figures in RESULTS.md). Those networks are what
## `train --family cyclegan` takes on a CPU budget anyway (config.CPU_RECIPES); the flags stay explicit so the asset
## does not depend on the machine's budget.
CYCLEGAN_STEPS ?= 1600
pretrained-cyclegan: $(STAMP)
	rm -rf runs/pretrained-cyclegan
	$(PY) -m cxrlib train --family cyclegan --data phantom --n-images 1000 --size 64 --steps $(CYCLEGAN_STEPS) \
		--seed 0 --checkpoint-every 800 --sample-every 400 --log-every 50 --set width=0.25 \
		--set 'model_kwargs={"generator": "unet", "ndf": 128}' \
		--out runs/pretrained-cyclegan --quiet
	$(PY) -c "from cxrlib.train import export_pretrained as e; \
		print(e('runs/pretrained-cyclegan', 'cxrlib/assets/cyclegan_phantom_64.pt', discriminator=False))"

## make pretrained-style: reproduce cxrlib/assets/style_phantom_64.pt -- the style preset (mapping network, modulated
## convolutions, noise inputs, style mixing; course D and recipe) at width 0.5 on the same 2,000 64-px phantoms, seed
## and steps as `make pretrained` (~26 min on a 2-core AVX2 CPU; notebook 09's mixing and truncation, RESULTS.md).
pretrained-style: $(STAMP)
	rm -rf runs/pretrained-style
	$(PY) -m cxrlib train --data phantom --n-images 2000 --size 64 --preset style --set width=0.5 \
		--steps $(PRETRAINED_STEPS) --seed 0 --checkpoint-every 500 --sample-every 250 --log-every 50 \
		--out runs/pretrained-style --quiet
	$(PY) -c "from cxrlib.train import export_pretrained as e; \
		print(e('runs/pretrained-style', 'cxrlib/assets/style_phantom_64.pt'))"

## make lessons: the results bank -- lesson experiments with 3 seeds at a longer budget than a notebook cell has,
## written to cxrlib/assets/lessons.json (resumable: finished parts are kept). Figures in benchmarks/RESULTS.md.
lessons: $(STAMP)
	$(PY) -m cxrlib.lessons run

## make test-browser: JupyterLab + headless Chromium run notebook 06 in the smoke budget and click its widgets.
## Installs Debian's chromium (apt) and the playwright package (never `playwright install`); screenshot in runs/browser/.
## Another notebook: make test-browser NOTEBOOK=notebooks/01_data_and_augmentation.ipynb
NOTEBOOK ?=
test-browser: $(STAMP)
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		echo "installing chromium (apt)"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install -q "playwright>=1.40"
	$(PY) tests/browser/check_notebook.py $(NOTEBOOK)

lint: $(STAMP)
	$(VENV)/bin/ruff check cxrlib tests benchmarks tools notebooks

clean:
	rm -rf runs .cache .pytest_cache
