# The two set-up commands are `make run` and `make test`; both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install run test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,redis]'
	touch $(STAMP)

install: $(STAMP)

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

test: install
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy tokens_app project

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .coverage .mypy_cache .ruff_cache
