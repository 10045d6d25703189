"""Django's task priority (-100..100, higher runs sooner) mapped onto the broker's priorities.

The two brokers count in opposite directions (kombu's transports):

- Redis: 0..9, **lower is served first**. kombu keeps one list per step of ``priority_steps``
  (default ``[0, 3, 6, 9]``) and a worker pops them in that order; a message sent without a
  priority counts as 0, the most urgent.
- RabbitMQ (AMQP): 0..``task_queue_max_priority``, **higher is served first**; without
  ``x-max-priority`` on the queue (Celery's ``task_queue_max_priority``) RabbitMQ ignores
  priorities, so a non-default priority is refused (``validate_task``) rather than dropped.

The mapping is linear and rounds half up, over the whole range, so that Django's order holds
among Django tasks (with kombu's default ``priority_steps`` Redis keeps four of the ten levels;
``CELERY_BROKER_TRANSPORT_OPTIONS = {"priority_steps": list(range(10))}`` keeps all ten):

=================  ==========================  =====================================
Django priority    Redis (0 first)             RabbitMQ, max priority M (M=10 shown)
=================  ==========================  =====================================
100                0 (step 0)                  M (10)
50                 2 (step 0)                  round(0.75·M) (8)
0 (default)        5 (step 3)                  round(0.5·M) (5)
-50                7 (step 6)                  round(0.25·M) (3)
-100               9 (step 9)                  0
=================  ==========================  =====================================

A run dispatched without a priority (``@reliable_task``'s ``.delay()``) counts as 0 on Redis,
so it goes before Django tasks below priority 45 on the same queue; on RabbitMQ it counts as 0,
so after every Django task above -90. Give Django tasks their own queue to keep the orders apart.
Brokers without priorities (or RabbitMQ without a max priority) take Django's default only.
"""

from __future__ import annotations

from typing import Any

#: Django's bounds (``django.tasks.base.TASK_MIN_PRIORITY`` / ``TASK_MAX_PRIORITY``).
DJANGO_MIN, DJANGO_MAX = -100, 100

#: Transports whose priorities run 0..9, lower first (kombu's virtual transports with ordered
#: priority lists).
LOWER_FIRST = frozenset({"redis"})
#: Transports whose priorities run 0..max, higher first.
HIGHER_FIRST = frozenset({"amqp"})

REDIS_MAX = 9


def to_redis(priority: int) -> int:
    """Django's ``priority`` as a Redis priority (0 most urgent, 9 least)."""
    return ((DJANGO_MAX - priority) * REDIS_MAX + 100) // 200


def to_amqp(priority: int, max_priority: int) -> int:
    """Django's ``priority`` as an AMQP priority (``max_priority`` most urgent, 0 least)."""
    return ((priority - DJANGO_MIN) * max_priority + 100) // 200


_driver_types: dict[tuple[int, str], str] = {}


def driver_type(app: Any) -> str:
    """The kind of the Celery app's broker transport ("redis", "amqp", …); nothing connects.
    Looked up once per app and broker URL."""
    key = (id(app), str(app.conf.broker_url))
    if key not in _driver_types:
        _driver_types[key] = str(app.connection_for_write().transport.driver_type)
    return _driver_types[key]


def broker_priority(priority: int, app: Any) -> int | None:
    """The broker priority of a run of Django ``priority`` on ``app``'s broker; ``None`` (no
    priority set) for Django's default on a broker without priorities. ``ValueError`` where a
    priority cannot be honoured."""
    kind = driver_type(app)
    if kind in LOWER_FIRST:
        return to_redis(priority)
    if kind in HIGHER_FIRST:
        max_priority = app.conf.task_queue_max_priority
        if not max_priority:
            if priority == 0:
                return None
            raise ValueError(
                "RabbitMQ ignores message priorities on queues declared without x-max-priority: "
                "set CELERY_TASK_QUEUE_MAX_PRIORITY (e.g. 10), or leave the priority at 0."
            )
        return to_amqp(priority, int(max_priority))
    if priority == 0:
        return None
    raise ValueError(
        f"the broker transport {kind!r} has no message priorities taskkit can map Django's onto "
        "(Redis and RabbitMQ do); leave the priority at 0."
    )


__all__ = ["broker_priority", "driver_type", "to_amqp", "to_redis"]
