# The two set-up commands are `make run` and `make test`; both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2
# The production profile's services, for `make test-production` (override to point elsewhere).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: install run serve test test-embedded test-production bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,production]'
	touch $(STAMP)

install: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,production,bench]'
	touch $(BENCH_STAMP)

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py loaddata fixtures/demo.json
	@echo
	@echo "  Example project on http://$(HOST):$(PORT)/  (admin: /admin/, demo users in README)"
	@echo "  Issue a token and call the API from another shell:"
	@echo "    TOKEN=\$$($(BIN)/python manage.py issue_token alice --name demo-\$$RANDOM --scopes notes:read,notes:write)"
	@echo "    curl -H \"Authorization: Bearer \$$TOKEN\" http://$(HOST):$(PORT)/api/notes/"
	@echo
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# Production settings (DEBUG off) under gunicorn: needs DJANGO_SECRET_KEY; set DATABASE_URL and
# REDIS_URL for PostgreSQL and Redis. Refuses to start when `check --deploy` finds an error.
serve: install
	@test -n "$$DJANGO_SECRET_KEY" || { echo "make serve: set DJANGO_SECRET_KEY (production settings, DEBUG off)" >&2; exit 2; }
	DJANGO_DEBUG=0 $(BIN)/python manage.py check --deploy --fail-level ERROR
	DJANGO_DEBUG=0 $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=0 $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	DJANGO_DEBUG=0 $(BIN)/gunicorn project.wsgi:application --config project/gunicorn_conf.py \
		--bind $(HOST):$(PORT) --workers $(WORKERS)

# The whole suite twice: the embedded default (SQLite, local memory), then the production
# profile (PostgreSQL, Redis). Without those services the second run is skipped with its
# reason; under CI=true it fails instead.
test: test-embedded test-production

test-embedded: install
	env -u DATABASE_URL -u REDIS_URL $(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered

test-production: install
	@$(BIN)/python -m tests.services $(TEST_DATABASE_URL) $(TEST_REDIS_URL) || { \
		if [ "$$CI" = "true" ]; then echo "test-production: FAILED, services unreachable under CI" >&2; exit 1; fi; \
		echo "test-production: SKIPPED, services unreachable (see above)"; exit 0; }
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) TOKENS_APP_TEST_PROFILE=production \
		$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered

# Benchmarks, written to docs/performance.md: in-process rows on SQLite and on PostgreSQL
# (DATABASE_URL, else the production profile's TEST_DATABASE_URL), throughput and database
# load under gunicorn, loaded by wrk (Debian's package, installed here when missing and
# possible) or else a Python client, and the token cache's propagation to 4 workers. Exits
# non-zero when a budget is missed (PostgreSQL unreachable: its budgets are missed).
bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || \
		  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }; }; } || \
		echo "make bench: no wrk; the throughput rows use the Python client"
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" $(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy tokens_app project

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .coverage .mypy_cache .ruff_cache
