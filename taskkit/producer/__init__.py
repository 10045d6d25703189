"""The producer side of the queue: a call to ``.delay()`` becomes a ledger row in the caller's
transaction and, once it commits, one broker message that says "look at run X".

It never imports the worker side nor ``taskkit.task``: it receives what it needs of a task as a
``taskkit.core.spec.TaskSpec``.
"""

__all__: list[str] = []
