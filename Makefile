# The project's commands. `make book` builds the book, `make test` runs every test,
# `make lab` opens the chapters in JupyterLab. All start with `setup`, which creates .venv
# on first use; `book`, `test` and `notebooks` also with `data`, which fetches
# Fashion-MNIST into .data/ on first use.

PYTHON ?= python3
# Any environment with a bin/python works, e.g. VENV="$CONDA_PREFIX" (environment.yml).
VENV ?= .venv
BIN := $(VENV)/bin
# A GPU user passes a CUDA build here, e.g.
#   make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
# It is installed only when the environment has no torch yet.
TORCH ?= torch==2.13.0
MATHJAX_VERSION := 3.2.2
MATHJAX_STATIC := .mathjax/static/mathjax
MATHJAX_ES5 := .mathjax/node_modules/mathjax/es5
# Notebooks are executed with exactly these settings, by the tests and by `make notebooks`,
# so that stored outputs and re-executed outputs agree (scripts/run_notebooks.py sets the
# same values when run by hand; tests/test_repo.py checks that the two lists match). The
# chapters run at smoke size (fastervit/sizes.py) and draw no progress bar (its times vary).
NOTEBOOK_ENV := ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CUDA_VISIBLE_DEVICES= MPLBACKEND=Agg PYTHONHASHSEED=0 FASTERVIT_SIZE=smoke TQDM_DISABLE=1
# Notebook paths for `make notebooks`; empty means all of them.
NB ?=
# The kernel "Python (fastervit)" is this environment's interpreter, registered inside the
# environment (its share/jupyter), never under the home folder. `make lab` opens every
# chapter in it, and tests/test_reader_run.py runs a chapter through it.
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/fastervit/kernel.json
# What Jupyter, IPython and matplotlib would otherwise write under the home folder
# (settings, workspaces, connection files, history, the font cache) stays in the environment.
LAB_STATE := $(abspath $(VENV))/lab-state
LAB_ENV := JUPYTER_CONFIG_DIR=$(LAB_STATE)/config JUPYTER_DATA_DIR=$(LAB_STATE)/data JUPYTER_RUNTIME_DIR=$(LAB_STATE)/runtime IPYTHONDIR=$(LAB_STATE)/ipython MPLCONFIGDIR=$(LAB_STATE)/matplotlib
# Defaults of JupyterLab's settings in this environment (a reader's own settings still win).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.d/fastervit.json
# More flags for `jupyter lab`, e.g. LAB_ARGS="--no-browser --port 8890" on a remote machine.
LAB_ARGS ?=

.PHONY: setup data book test notebooks figures mathjax clean lab

setup: $(VENV)/.installed $(KERNEL_SPEC)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml is newer than the stamp.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[book,test,dev]"
	touch $@

$(KERNEL_SPEC): $(VENV)/.installed
	$(BIN)/python -m ipykernel install --sys-prefix --name fastervit --display-name "Python (fastervit)"

# Fashion-MNIST from Debian's package, as any user (no root, no system-wide install), into
# .data/fashion-mnist, where the package looks for it; a no-op once the files are there.
data:
	bash scripts/get_fashion_mnist.sh

# MathJax 3 from the npm registry, so that the built book loads no script from the network.
# Only the components the book loads are copied: the others (the accessibility menu and
# speech rules) would fetch files from a CDN.
mathjax: $(MATHJAX_STATIC)/startup.js

$(MATHJAX_STATIC)/startup.js:
	npm install --prefix .mathjax --no-audit --no-fund --no-save mathjax@$(MATHJAX_VERSION)
	rm -rf $(MATHJAX_STATIC)
	mkdir -p $(MATHJAX_STATIC)/input $(MATHJAX_STATIC)/output/chtml $(MATHJAX_STATIC)/a11y
	cp .mathjax/node_modules/mathjax/LICENSE $(MATHJAX_ES5)/startup.js $(MATHJAX_ES5)/core.js $(MATHJAX_STATIC)/
	cp -r $(MATHJAX_ES5)/input/tex.js $(MATHJAX_ES5)/input/tex $(MATHJAX_STATIC)/input/
	cp $(MATHJAX_ES5)/output/chtml.js $(MATHJAX_STATIC)/output/
	cp -r $(MATHJAX_ES5)/output/chtml/fonts $(MATHJAX_STATIC)/output/chtml/
	cp $(MATHJAX_ES5)/a11y/assistive-mml.js $(MATHJAX_STATIC)/a11y/

book: setup mathjax data
	$(BIN)/jupyter-book build . -W -n --keep-going

test: setup mathjax data
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	env $(NOTEBOOK_ENV) $(BIN)/python -m pytest tests notebooks --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600 --ignore-glob='*/.ipynb_checkpoints/*' -p no:cacheprovider -n 2 --dist loadfile

notebooks: setup data
	env $(NOTEBOOK_ENV) $(BIN)/python scripts/run_notebooks.py $(NB)

# JupyterLab on notebooks/, where the project's kernel is the only one, so that every chapter
# opens in it. It fetches nothing: no news feed or update check (nor the question whether to
# fetch them), no extension catalogue, no search for language servers (which runs npm).
# The kernel sees all CPU threads and any GPU (the tests' NOTEBOOK_ENV does not apply).
lab: setup $(LAB_OVERRIDES)
	env $(LAB_ENV) $(BIN)/jupyter lab --ServerApp.root_dir=notebooks \
		--KernelSpecManager.allowed_kernelspecs=fastervit --MappingKernelManager.default_kernel_name=fastervit \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		--LabApp.extension_manager=readonly --LanguageServerManager.autodetect=False $(LAB_ARGS)

$(LAB_OVERRIDES): $(VENV)/.installed
	mkdir -p $(@D)
	echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

figures: setup
	$(BIN)/python scripts/make_figures.py

clean:
	rm -rf _build .mathjax .pytest_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
