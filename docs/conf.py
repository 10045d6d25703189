"""Sphinx configuration of taskkit's docs (``make docs``): MyST Markdown pages, the Furo theme,
autodoc for the API, and ``_ext/taskkit_reference.py`` for the tables generated from the code.

Built without network (no intersphinx): every link is inside these pages or to a plain URL.
"""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

# autodoc imports taskkit's models and commands: a minimal Django project, nothing connected.
settings.configure(
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.admin",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django_celery_results",
        "taskkit",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
    CELERY_BROKER_URL="memory://",
)
django.setup()

project = "taskkit"
author = "The taskkit authors"
copyright = "2026, The taskkit authors"
release = "0.2.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "taskkit_reference",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "requirements.txt"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}

html_theme = "furo"
html_title = f"taskkit {release}"
