"""The Celery app of the test project (workers start with ``-A tests.celery_app``)."""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["tests.testapp"])
app.autodiscover_tasks(["tests.testapp"], related_name="deploy_decode")
app.autodiscover_tasks(["tests.testapp"], related_name="control_tasks")
app.conf.imports = [*(app.conf.imports or ()), "tests.testapp.deploy_rename"]
if django.VERSION >= (6, 0):  # tasks written with Django's task API (django.tasks)
    app.conf.imports = [*app.conf.imports, "tests.testapp.django_tasks"]
