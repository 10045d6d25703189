"""The benchmark of taskkit against plain Celery (``make bench``); not part of the package."""
