# The two commands a fresh machine needs (see README):
#   make serve   install into .venv and run the service on its embedded defaults
#   make test    install into .venv (with the test servers), check lint, format and types, run the test suite
#   make test-fast   the fast tier (in process, no servers, no model beyond MiniLM; README, "Quickstart")
.PHONY: serve test test-fast lint

serve:
	bash scripts/setup.sh run
	.venv/bin/cace serve

test:
	bash scripts/setup.sh test
	$(MAKE) lint
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

test-fast:
	.venv/bin/python -m pytest -q -m "not server and not slow and not llm" $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
