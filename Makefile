# taskkit — the two commands of the README, plus lint.
#   make test                    SQLite + embedded Redis (or DATABASE_URL / REDIS_URL)
#   make test-faults             only the fault suite (tests/faults), with its table of counts
#                                (the soak: TASKKIT_SOAK_RUNS=5000 runs, TASKKIT_SOAK_KILLS whole-worker
#                                kills (default 1 per 100 runs, 5..20), bound TASKKIT_SOAK_SECONDS=400)
#   make demo                    the demo project with web + worker + relay + Flower under honcho
#                                (Ctrl-C stops it; demo/README.md walks through it)
#   make demo-password           a new password for the demo's admin (shown by `make demo` after)
#   make bench                   taskkit vs plain Celery, backlog drains with worker/PostgreSQL CPU per run
#                                (BENCH_ARGS="--runs 2000 --rounds 3", "--quick", "--rss-only --rss-runs 100000")
#   make lint                    ruff, and mypy on taskkit, devsupport and tests/typecheck (the typed-task
#                                checks: assert_type, and expected errors that must stay errors)
#   make install-check           the wheel alone in a fresh virtualenv + the README's Install section
#                                in a scratch project, one task through a real worker (Redis db 14)
# Variables: PYTHON (interpreter), VENV (virtualenv dir), DJANGO (pip requirement for Django).

PYTHON ?= python3
VENV ?= .venv
DJANGO ?=
PIP_FLAGS ?= --quiet --disable-pip-version-check
STAMP = $(VENV)/.installed-$(subst /,_,$(subst >,gt,$(subst <,lt,$(subst =,eq,$(DJANGO)))))

.PHONY: test test-faults demo demo-password lint venv clean bench install-check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[test,demo,lint]' $(if $(DJANGO),'$(DJANGO)')
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

demo-password: $(STAMP)
	cd demo && $(abspath $(VENV))/bin/python manage.py demo_password $(if $(PASSWORD),--password '$(PASSWORD)')

clean:
	rm -rf $(VENV) .tmp test-output build *.egg-info
