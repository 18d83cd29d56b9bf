# The README's two commands: `make quickstart` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast quickstart lint format bench-cpu clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$(test -d ../shared/wheels && echo --find-links ../shared/wheels) -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The released checkpoint for the real-weight tests: EMBEDDINGGEMMA_300M if set, else fetched with
# ../shared/tools/fetch-embeddinggemma when that tool is there (cached after the first time).
FETCH := ../shared/tools/fetch-embeddinggemma

# Full suite, slow real-weight tests included.
test: $(STAMP)
	EMBEDDINGGEMMA_300M="$${EMBEDDINGGEMMA_300M:-$$(test -x $(FETCH) && $(FETCH) | tail -n 1)}" \
	  $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

# The whole recipe at CPU scale (configs/recipe.py:quickstart); needs only the `recipe` extra.
RECIPE_STAMP := $(VENV)/.installed-recipe
$(RECIPE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[recipe]'
	touch $(RECIPE_STAMP)

quickstart: $(RECIPE_STAMP)
	$(PY) -m embeddinggemma_jax.recipe --config=configs/recipe.py:quickstart --workdir=runs/quickstart

lint: $(STAMP)
	$(PY) -m ruff check embeddinggemma_jax tests bench configs
	$(PY) -m ruff format --check embeddinggemma_jax tests bench configs

format: $(STAMP)
	$(PY) -m ruff format embeddinggemma_jax tests bench configs
	$(PY) -m ruff check --fix embeddinggemma_jax tests bench configs

bench-cpu: $(STAMP)
	$(PY) bench/embed.py --device cpu

clean:
	rm -rf $(VENV) build *.egg-info
