# Every target creates the virtual environment first if it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit bench fuzz clean

# Under a lock (flock, from util-linux), so that `make run` and `make test` started
# together do not both build it; the second then finds it done and skips the install.
$(VENV)/.installed-%: pyproject.toml
	mkdir -p $(VENV)
	flock $(VENV)/.lock sh -ec '\
		if [ $@ -nt pyproject.toml ]; then exit; fi; \
		test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
		$(BIN)/python -m pip install --quiet --upgrade pip; \
		$(BIN)/python -m pip install --quiet -e ".[$*]"; \
		touch $@'

run: $(VENV)/.installed-test
	$(BIN)/mcrelay daemon --interface 127.0.0.1

test: lint typecheck unit

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/pytest

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py all

fuzz: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet atheris
	mkdir -p .fuzz/corpus
	$(BIN)/python fuzz/fuzz_datagram.py --write-seeds .fuzz/corpus
	$(BIN)/python fuzz/fuzz_datagram.py -max_total_time=120 -print_final_stats=1 -artifact_prefix=.fuzz/ .fuzz/corpus

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz
