# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test audit bench bench-ingest bench-thresholds bench-casework bench-notifications fuzz lint clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/attendance run

test: $(STAMP) audit
	$(BIN)/ruff check shared services tests bench
	$(BIN)/pytest

# Known vulnerabilities in the pinned dependencies fail it; ones it could not check are counted
# and warned about (AUDIT_STRICT=1 fails on those too). See README, "Dependency audit".
audit: $(STAMP)
	$(BIN)/python .ci/audit_dependencies.py

bench: $(STAMP)
	$(BIN)/python bench/end_to_end.py

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

bench-thresholds: $(STAMP)
	$(BIN)/python bench/thresholds.py

bench-casework: $(STAMP)
	$(BIN)/python bench/casework.py

bench-notifications: $(STAMP)
	$(BIN)/python bench/notifications.py

# The CI run of tests/integration/test_fuzz.py takes 5 examples per operation; a campaign takes more.
FUZZ_EXAMPLES ?= 200
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/integration/test_fuzz.py --timeout 0 -q

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench

clean:
	rm -rf $(VENV) .data .pytest_cache
