# taskkit's make targets. The README's two commands are `make demo` and `make test`.
#   make demo                    the demo shop: web + worker + relay + Flower under honcho, on one
#                                embedded Redis and SQLite (demo/run.py; no servers needed; Ctrl-C
#                                stops it; demo/README.md walks through it)
#   make test                    SQLite + embedded Redis (or DATABASE_URL / REDIS_URL)
#   make test-faults             only the fault suite (tests/faults), with its table of counts
#                                (the soak: TASKKIT_SOAK_RUNS=5000 runs, TASKKIT_SOAK_KILLS whole-worker
#                                kills (default 1 per 100 runs, 5..20), bound TASKKIT_SOAK_SECONDS=400)
#   make demo-password           a new password for the demo's admin (shown by `make demo` after)
#   make bench                   taskkit vs plain Celery, backlog drains with worker/PostgreSQL CPU per run
#                                (BENCH_ARGS="--runs 2000 --rounds 3", "--quick", "--rss-only --rss-runs 100000")
#   make lint                    ruff, and mypy on taskkit, devsupport and tests/typecheck (the typed-task
#                                checks: assert_type, and expected errors that must stay errors)
#   make venv                    .venv: the package (editable, with its extras) + requirements/dev.txt
#   make docs                    the docs site (docs/ -> docs/_build/html): Sphinx, warnings are errors,
#                                built without network; its own venv .venv-docs (docs/requirements.txt)
#   make dist                    sdist + wheel in dist/, `twine check`, and .ci/check_dist.py on their
#                                contents; its own venv .venv-dist (requirements/dist.txt)
#   make install-check           the wheel alone in a fresh virtualenv + the README's Install section
#                                in a scratch project, one task through a real worker (Redis db 14)
# Variables: PYTHON (interpreter), VENV (virtualenv dir), DJANGO (pip requirement for Django).

PYTHON ?= python3
VENV ?= .venv
DJANGO ?=
PIP_FLAGS ?= --quiet --disable-pip-version-check
STAMP = $(VENV)/.installed-$(subst /,_,$(subst >,gt,$(subst <,lt,$(subst =,eq,$(DJANGO)))))
DOCS_VENV ?= .venv-docs
DIST_VENV ?= .venv-dist
# The docs build runs without network when unshare can make a private network namespace.
NO_NETWORK ?= $(shell unshare -rn true 2>/dev/null && echo 'unshare -rn')

.PHONY: test test-faults demo demo-password lint venv clean bench install-check docs dist

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip

# A venv made before the rename still has the editable `taskkit` dist (0.1.0): it goes first.
$(STAMP): pyproject.toml requirements/dev.txt $(VENV)/bin/python
	if $(VENV)/bin/pip show --quiet taskkit >/dev/null 2>&1; then $(VENV)/bin/pip uninstall $(PIP_FLAGS) -y taskkit; fi
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[postgres,json-logs,metrics]' -r requirements/dev.txt $(if $(DJANGO),'$(DJANGO)')
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-faults: $(STAMP)
	TASKKIT_SOAK_RUNS=$${TASKKIT_SOAK_RUNS:-5000} TASKKIT_SOAK_SECONDS=$${TASKKIT_SOAK_SECONDS:-400} $(VENV)/bin/python -m pytest tests/faults $(PYTEST_ARGS)

# mypy checks what pyproject's [tool.mypy] names: packages taskkit, devsupport; tests.typecheck.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check taskkit tests/typecheck
	PYTHONPATH=. $(VENV)/bin/mypy

install-check:
	PYTHON=$(PYTHON) bash .ci/install-check

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

demo: $(STAMP)
	$(VENV)/bin/python demo/run.py

$(DOCS_VENV)/.installed: docs/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install $(PIP_FLAGS) -r docs/requirements.txt -e '.[json-logs,metrics]'
	touch $@

# -W --keep-going: every warning is reported, and any fails the build. -E: no stale pickles.
docs: $(DOCS_VENV)/.installed
	rm -rf docs/_build
	$(NO_NETWORK) $(DOCS_VENV)/bin/python -m sphinx -W --keep-going -E -b html docs docs/_build/html

$(DIST_VENV)/.installed: requirements/dist.txt
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install $(PIP_FLAGS) -r requirements/dist.txt
	touch $@

dist: $(DIST_VENV)/.installed
	rm -rf dist build
	$(DIST_VENV)/bin/python -m build --outdir dist .
	$(DIST_VENV)/bin/twine check --strict dist/*
	$(DIST_VENV)/bin/python .ci/check_dist.py dist

demo-password: $(STAMP)
	cd demo && $(abspath $(VENV))/bin/python manage.py demo_password $(if $(PASSWORD),--password '$(PASSWORD)')

clean:
	rm -rf $(VENV) $(DOCS_VENV) $(DIST_VENV) .tmp test-output build dist docs/_build *.egg-info
