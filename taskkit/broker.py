"""Which kombu transport a Celery app's broker runs, and taskkit's transport for Redis by default.

kombu picks a connection's transport class from Celery's ``broker_transport`` setting when it is
set (an alias of ``kombu.transport.TRANSPORT_ALIASES`` such as ``"redis"``, or an import path
such as ``"taskkit.transport:Transport"``), and otherwise from the broker URL's scheme, looked up
in the same aliases (``redis://`` and ``rediss://`` both give ``kombu.transport.redis:Transport``).

kombu's own Redis transport stops the worker on one queue entry that is not JSON
(``taskkit.transport`` explains why). So when an app's broker URLs are all ``redis://`` /
``rediss://`` and the project chose no transport, :func:`use_safe_transport` sets
``broker_transport = "taskkit.transport:Transport"`` on the app. taskkit does this for the current
Celery app when Django starts (``TaskkitConfig.ready()``; a worker started with ``celery -A proj
worker`` sets Django up before it connects) and again for each worker's own app on
``worker_init``. A project that wants kombu's transport says so: ``CELERY_BROKER_TRANSPORT =
"redis"``; check ``taskkit.W010`` then warns.

Nothing here imports kombu's Redis transport unless asked to resolve a class, so projects on
other brokers do not pay for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("taskkit.broker")

#: The transport taskkit uses for Redis brokers unless the project chose one.
SAFE_TRANSPORT = "taskkit.transport:Transport"
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
    return transport_path(conf) == "kombu.transport.redis:Transport"


def uses_taskkit_transport(conf: Mapping[str, Any]) -> bool:
    return "taskkit.transport" in transport_modules(conf)


def use_safe_transport(app: Any) -> bool:
    """Make ``app`` use taskkit's transport if its broker is Redis and no transport was chosen.

    Returns whether it changed the transport. An explicit ``broker_transport``
    (``CELERY_BROKER_TRANSPORT``) is always kept.

    kombu gives a ``rediss://`` URL TLS only when the transport comes from the scheme: with an
    import path as the transport and no ``broker_use_ssl`` it would connect in plain text. So when
    taskkit's transport serves a ``rediss://`` URL without ``broker_use_ssl``, this sets what kombu
    would have used (``ssl_cert_reqs=CERT_NONE``) and warns as kombu does; set
    ``CELERY_BROKER_USE_SSL`` to verify the server's certificate.
    """
    conf = app.conf
    changed = False
    if not _conf_get(conf, "broker_transport") and is_redis_broker(conf):
        conf.broker_transport = SAFE_TRANSPORT
        changed = True
        logger.debug("taskkit: Celery app %r uses %s (Redis broker)", app.main, SAFE_TRANSPORT)
    secure = any(scheme(url) == "rediss" for url in broker_urls(conf))
    if secure and not _conf_get(conf, "broker_use_ssl") and uses_taskkit_transport(conf):
        import ssl

        logger.warning(
            "taskkit: the broker URL is rediss:// without CELERY_BROKER_USE_SSL: TLS without "
            "certificate verification (kombu's own default). Set CELERY_BROKER_USE_SSL = "
            "{'ssl_cert_reqs': ssl.CERT_REQUIRED, 'ssl_ca_certs': ...} to verify the server."
        )
        conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_NONE}
    return changed


def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None:
        use_safe_transport(app)


def connect() -> None:
    """Use the safe transport for the current app now, and for every worker's app at start."""
    from celery import current_app
    from celery.signals import worker_init

    use_safe_transport(current_app._get_current_object())
    worker_init.connect(_on_worker_init, weak=False, dispatch_uid="taskkit.broker.worker_init")


__all__ = [
    "REDIS_SCHEMES",
    "SAFE_TRANSPORT",
    "broker_urls",
    "connect",
    "is_redis_broker",
    "runs_stock_redis_transport",
    "transport_path",
    "use_safe_transport",
    "uses_taskkit_transport",
    "visibility_timeout",
]
