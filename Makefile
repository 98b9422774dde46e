# Every target creates the virtual environment first if it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

MAN_DIR ?= build/man

.PHONY: run demo-federation test lint typecheck unit bench fuzz man clean

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

# A nats-server and two relays federated through it (UDP 4446 and 4447), on loopback;
# it prints the commands to chat across them, and Ctrl-C stops it all.
demo-federation: $(VENV)/.installed-test
	BIN=$(BIN) scripts/demo-federation.sh

test: lint typecheck unit

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# In two processes (pytest-xdist), a test file's tests in the same one (its module
# fixtures, such as the systemd container, made once). With .pyc files written, even
# where PYTHONDONTWRITEBYTECODE is set: without them each worker, daemon and CLI run
# compiles mcrelay and the tests from source (collecting takes 6 s of CPU, not 2).
# On this shared 2-core machine: 135 s of CPU (155-160 before), 110-135 s of wall time
# (120-160 before, the machine busy with other work both times).
unit: $(VENV)/.installed-test
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n 2 --dist loadfile

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py all

# The manual page, made from the command's own parser (argparse-manpage, in the test extra).
man: $(VENV)/.installed-test
	mkdir -p $(MAN_DIR)
	$(BIN)/argparse-manpage --module mcrelay.cli.manual --function manual_parser \
		--project-name mcrelay --prog mcrelay --manual-title 'mcrelay manual' \
		--version "$$($(BIN)/python -c 'import mcrelay; print(mcrelay.__version__)')" \
		--description 'secure group-messaging relay for local networks' \
		--output $(MAN_DIR)/mcrelay.1

fuzz: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet atheris
	mkdir -p .fuzz/corpus
	$(BIN)/python fuzz/fuzz_datagram.py --write-seeds .fuzz/corpus
	$(BIN)/python fuzz/fuzz_datagram.py -max_total_time=120 -print_final_stats=1 -artifact_prefix=.fuzz/ .fuzz/corpus
	mkdir -p .fuzz/secure-corpus
	$(BIN)/python fuzz/fuzz_secure.py --write-seeds .fuzz/secure-corpus
	$(BIN)/python fuzz/fuzz_secure.py -max_total_time=120 -print_final_stats=1 -artifact_prefix=.fuzz/secure- .fuzz/secure-corpus

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz
