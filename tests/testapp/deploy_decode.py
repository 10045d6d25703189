"""Old and new code of two tasks, for the fault suite's deploy scenarios (b) and (c).

``TASKKIT_TEST_DECODE_RELEASE`` (default ``old``) picks the release a process runs: the test
process dispatches with the old code; a worker started with ``new`` runs the new code.

- ``settle_invoice``: old ``(n, amount)``; new ``(n, amount, currency)`` — a parameter added
  without a default, so runs queued by the old release no longer bind.
- ``archive_invoice(n, invoice)``: the same in both releases, but its argument's model,
  ``deployapp.Invoice``, is installed only in the old release (see ``tests/settings.py``).
"""

import os

from tenacity import stop_after_attempt, wait_fixed

from taskkit import reliable_task

from .tasks import _effect

RELEASE = os.environ.get("TASKKIT_TEST_DECODE_RELEASE", "old")
RETRIES = {"stop": stop_after_attempt(5), "wait": wait_fixed(0.2)}  # must not be used

if RELEASE == "old":

    @reliable_task(name="tests.testapp.deploy_decode.settle_invoice", **RETRIES)
    def settle_invoice(n, amount):
        _effect("settled", n=n, amount=amount)

else:

    @reliable_task(name="tests.testapp.deploy_decode.settle_invoice", **RETRIES)
    def settle_invoice(n, amount, currency):
        _effect("settled", n=n, amount=amount, currency=currency)


@reliable_task(**RETRIES)
def archive_invoice(n, invoice):
    _effect("archived", n=n, invoice=invoice.pk)
