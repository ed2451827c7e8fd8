# Two commands for a fresh machine: `make run` (the broker on SQLite) and `make test` (the suite).
# CI runs `make test` through .ci/run.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast install lint typecheck typecheck-platforms contracts migrations-check pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Front-end libraries (htmx, xterm.js, asciinema-player, Chart.js, noVNC) come from npm and
# are served by the broker from node_modules; they are never copied into the repository.
NPM_STAMP := node_modules/.installed-stamp
$(NPM_STAMP): package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --no-audit --no-fund --loglevel=error && touch $(NPM_STAMP); \
	else \
		echo "npm not found: the web pages will lack their front-end libraries"; \
	fi

install: $(STAMP) $(NPM_STAMP)

## run: install, migrate, start the broker on SQLite at 127.0.0.1:8080 (prints how to log in)
run: install
	$(BIN)/supportbroker serve

## test: lint, type-check (also agent/ for Windows and macOS), import contracts, migration drift
## check, then the whole test suite
test: install lint typecheck typecheck-platforms contracts migrations-check pytest

lint: install
	$(BIN)/ruff check broker agent audit web tests bench
	$(BIN)/ruff format --check broker agent audit web tests bench

typecheck: install
	$(BIN)/mypy

# Who may import whom (docs/ARCHITECTURE.md), with every exception and its reason in the file.
contracts: install
	$(BIN)/lint-imports --no-cache importlinter.toml

# The agent runs on the user's machine: it must import on Windows and macOS too (there it
# refuses the rights it cannot give instead of failing to start).
typecheck-platforms: install
	$(BIN)/mypy --platform win32 -p agent
	$(BIN)/mypy --platform darwin -p agent

migrations-check: install
	$(BIN)/python -m broker.db.check

# The whole suite once; the audit library's coverage gate (100 % of audit/, branches too) is
# measured in the same run: --cov=audit measures audit/ only, whichever test reaches it.
pytest: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
		--cov=audit --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100

## test-fast: the edit loop: SQLite only; leaves out the browser, desktop and PostgreSQL tests
## (markers set by tests/conftest.py) and the `slow` ones (the authorization matrix's cells
## beyond its sample, tests that fuzz or kill processes for minutes); no lint, no coverage
## gate. `make test` stays the whole suite, every matrix cell included
test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider \
		-m "not postgres and not browser and not desktop and not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
