"""A test app installed only in the "old" release of the deploy scenarios (see tests/settings.py):
its model exists when runs are dispatched and is gone from the worker of the "new" release, as
when a deploy removes a model while runs referencing it are queued. Its table is created by the
test database setup (no migrations), and stays, as a removed model's table usually does."""
