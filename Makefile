# Both entry points create .venv and install everything on first use (torch first: see pyproject.toml).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgec-installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# What ruff checks and formats (mypy's modules are listed in pyproject.toml).
LINTED := edgec tests benchmarks examples scripts

.PHONY: demo test test-deep install bench clean

install: $(STAMP)

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is named again beside the extras: executorch and ray must not replace the CPU build with another torch.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[demo,dev,executorch,ray]' torch==2.13.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

# Lint, format and type checks first: they take seconds, the suite takes minutes.
test: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy
	$(PY) -m pytest -q

# Slow checks: minutes-long checks on the real MiniLM, Ray and torchrun (marker `deep`; skipped where the model or ../shared/data is
# absent), then the property tests with ten times the examples and pruning's peak memory at 2,048 texts (EDGEC_DEEP=1).
test-deep: $(STAMP)
	$(PY) -m pytest -q -m deep
	EDGEC_DEEP=1 $(PY) -m pytest -q tests/test_properties.py tests/stages/test_prune_memory.py

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
