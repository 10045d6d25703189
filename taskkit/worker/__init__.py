"""The worker side of the queue: a message for run X becomes at most one attempt at a time
(claimed, run, its outcome recorded), and a dead child's attempt is recorded from the parent.

It never imports the producer side nor ``taskkit.task``: it receives what it needs of a task,
including how to publish its next message, as a ``taskkit.core.spec.TaskSpec``.
"""

__all__: list[str] = []
