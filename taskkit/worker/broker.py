"""Which kombu transport a Celery app's broker runs, and taskkit's transport for Redis by default.

kombu picks a connection's transport class from Celery's ``broker_transport`` setting when it is
set (an alias of ``kombu.transport.TRANSPORT_ALIASES`` such as ``"redis"``, or an import path
such as ``"taskkit.transport:Transport"``), and otherwise from the broker URL's scheme, looked up
in the same aliases: ``redis://`` and ``rediss://`` both give ``kombu.transport.redis:Transport``.

kombu's own Redis transport stops the worker on one queue entry that is not JSON
(``taskkit.transport`` explains why). So :func:`use_safe_transport` points the ``redis`` and
``rediss`` aliases at ``taskkit.transport:Transport``, a subclass that logs and drops such an
entry. taskkit does this when Django starts (``TaskkitConfig.ready()``), which in a worker started
with ``celery -A proj worker`` happens before it connects. Every connection whose transport comes
from a ``redis://`` / ``rediss://`` URL (or the ``"redis"`` alias) then gets taskkit's transport,
whatever Celery app opens it, while other schemes in the same process keep theirs: an app whose
broker URL changes to ``amqp://`` gets AMQP. kombu still applies its ``rediss://`` TLS default, as
that depends on the alias name, not the class.

A project that wants kombu's own transport names it by import path:
``CELERY_BROKER_TRANSPORT = "kombu.transport.redis:Transport"``; check ``taskkit.W010`` then warns.

Resolving an import path imports the class (for subclass checks); aliases are read without
importing anything, so projects on other brokers do not import kombu's Redis transport.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("taskkit.broker")

#: The transport taskkit uses for Redis brokers unless the project chose one, by its documented
#: path (``taskkit.transport`` re-exports ``taskkit.worker.transport``).
SAFE_TRANSPORT = "taskkit.transport:Transport"
#: kombu's own Redis transport (what the ``redis`` / ``rediss`` aliases name in kombu).
STOCK_REDIS_TRANSPORT = "kombu.transport.redis:Transport"
#: URL schemes of plain Redis brokers (Sentinel is not covered: taskkit has no transport for it).
REDIS_SCHEMES = ("redis", "rediss")

#: kombu transport modules that redeliver an unacknowledged message after ``visibility_timeout``,
#: with the default timeout each applies when ``broker_transport_options`` gives none (seconds).
VISIBILITY_TIMEOUT_MODULES: dict[str, float] = {
    "kombu.transport.redis": 3600.0,  # Channel.visibility_timeout
    "kombu.transport.SQS": 1800.0,  # Channel.default_visibility_timeout
    "kombu.transport.pgmq": 1800.0,  # Channel.default_visibility_timeout
}


def _conf_get(conf: Mapping[str, Any], name: str) -> Any:
    """A setting of a Celery ``Settings`` object (its properties honour environment variables
    such as ``CELERY_BROKER_URL``) or of a plain mapping (the tests' settings)."""
    if not isinstance(conf, dict) and hasattr(type(conf), name):
        return getattr(conf, name)
    return conf.get(name)


def broker_urls(conf: Mapping[str, Any]) -> list[str]:
    """Every URL the app connects to its broker with (failover lists, read and write URLs)."""
    urls: list[str] = []
    for name in ("broker_url", "broker_read_url", "broker_write_url"):
        value = _conf_get(conf, name)
        if not value:
            continue
        for url in value if isinstance(value, list | tuple) else str(value).split(";"):
            url = str(url).strip()
            if url and url not in urls:
                urls.append(url)
    return urls


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_redis_broker(conf: Mapping[str, Any]) -> bool:
    """True when every broker URL is ``redis://`` or ``rediss://``."""
    urls = broker_urls(conf)
    return bool(urls) and all(scheme(url) in REDIS_SCHEMES for url in urls)


def transport_name(conf: Mapping[str, Any]) -> Any:
    """What kombu resolves the transport from: ``broker_transport``, else the URL's scheme."""
    chosen = _conf_get(conf, "broker_transport")
    if chosen:
        return chosen
    urls = broker_urls(conf)
    return scheme(urls[0]) if urls else "amqp"


def transport_path(conf: Mapping[str, Any]) -> str | None:
    """The ``module:Class`` kombu uses for this configuration, without importing it if it is an
    alias; ``None`` if a configured import path cannot be imported (the worker would not start)."""
    from kombu.transport import TRANSPORT_ALIASES

    name = transport_name(conf)
    if isinstance(name, str):
        alias = TRANSPORT_ALIASES.get(name)
        if isinstance(alias, str):  # "module:Class" (SLMQ's alias is "module.Class")
            return alias if ":" in alias else ":".join(alias.rsplit(".", 1))
        if alias is None and ":" not in name and "." not in name:
            return None  # an unknown alias: kombu raises "No such transport"
    cls = transport_class(conf)
    return None if cls is None else f"{cls.__module__}:{cls.__qualname__}"


def transport_class(conf: Mapping[str, Any]) -> type | None:
    """The transport class kombu uses for this configuration (imported), or ``None`` if it
    cannot be imported."""
    from kombu.transport import resolve_transport

    try:
        return resolve_transport(transport_name(conf))
    except Exception as exc:  # ImportError, KeyError (unknown alias), AttributeError
        logger.debug("taskkit: could not resolve the broker transport: %r", exc)
        return None


def transport_modules(conf: Mapping[str, Any]) -> list[str]:
    """The modules of the transport class and of its bases, most derived first.

    For an alias, the alias's module alone (nothing is imported); for an import path, the class
    is imported and its bases are read, so a subclass of kombu's Redis transport (taskkit's own,
    or a project's) counts as Redis.
    """
    path = transport_path(conf)
    if path is None:
        return []
    module = path.split(":", 1)[0]
    if module.startswith("kombu.transport."):
        return [module]
    cls = transport_class(conf)
    return [] if cls is None else [klass.__module__ for klass in cls.__mro__]


def visibility_timeout(conf: Mapping[str, Any]) -> float | None:
    """The broker's redelivery timeout for unacknowledged messages, whatever transport class is
    configured; ``None`` for a transport that has none (AMQP and the others)."""
    for module in transport_modules(conf):
        if module in VISIBILITY_TIMEOUT_MODULES:
            options = _conf_get(conf, "broker_transport_options") or {}
            return float(options.get("visibility_timeout", VISIBILITY_TIMEOUT_MODULES[module]))
    return None


def runs_stock_redis_transport(conf: Mapping[str, Any]) -> bool:
    """True when a Redis broker runs kombu's own Redis transport (not taskkit's)."""
    if not is_redis_broker(conf):
        return False
    return transport_path(conf) == STOCK_REDIS_TRANSPORT


def use_safe_transport() -> bool:
    """Point kombu's ``redis`` and ``rediss`` aliases at taskkit's transport (this process).

    An alias that no longer names kombu's own Redis transport (changed by someone else) is left
    alone. Returns whether anything changed. Idempotent.
    """
    from kombu import transport

    changed = False
    for alias in REDIS_SCHEMES:
        if transport.TRANSPORT_ALIASES.get(alias) == STOCK_REDIS_TRANSPORT:
            transport.TRANSPORT_ALIASES[alias] = SAFE_TRANSPORT
            # kombu caches resolved classes by name (get_transport_cls): forget kombu's class.
            cache = getattr(transport, "_transport_cache", None)
            if isinstance(cache, dict):
                cache.pop(alias, None)
            changed = True
    if changed:
        logger.debug("taskkit: redis:// and rediss:// brokers use %s", SAFE_TRANSPORT)
    return changed


def connect() -> None:
    """Called by ``TaskkitConfig.ready()``."""
    use_safe_transport()


__all__ = [
    "REDIS_SCHEMES",
    "SAFE_TRANSPORT",
    "STOCK_REDIS_TRANSPORT",
    "broker_urls",
    "connect",
    "is_redis_broker",
    "runs_stock_redis_transport",
    "transport_path",
    "use_safe_transport",
    "visibility_timeout",
]
