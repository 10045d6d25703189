"""taskkit.worker.broker: redis:// and rediss:// brokers get taskkit's transport unless the project
names another; other schemes keep theirs."""

import ssl

import pytest
from celery import Celery
from kombu import Connection

from taskkit.worker import broker

SAFE = "taskkit.transport:Transport"  # the documented path, as projects write it
SAFE_CLASS = "taskkit.worker.transport:Transport"  # where the class lives
STOCK = "kombu.transport.redis:Transport"

pytestmark = pytest.mark.timeout(30)


def transport_of(app: Celery, write: bool = False) -> str:
    opener = app.connection_for_write if write else app.connection_for_read
    with opener() as connection:
        cls = type(connection.transport)
        return f"{cls.__module__}:{cls.__qualname__}"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"broker_url": "redis://h:6379/0"}, SAFE_CLASS),
        ({"broker_url": "rediss://h:6380/0"}, SAFE_CLASS),
        ({"broker_url": "redis://a:6379/0;redis://b:6379/0"}, SAFE_CLASS),  # failover
        ({"broker_url": "redis://h/0", "broker_transport": "redis"}, SAFE_CLASS),  # the alias
        ({"broker_url": "redis://h/0", "broker_transport": SAFE}, SAFE_CLASS),
        # the project's explicit choice of kombu's own class is kept (check W010 warns)
        ({"broker_url": "redis://h/0", "broker_transport": STOCK}, STOCK),
        # other schemes keep their transport
        ({"broker_url": "amqp://h//"}, "kombu.transport.pyamqp:Transport"),
        ({"broker_url": "memory://"}, "kombu.transport.memory:Transport"),
        ({"broker_url": "sentinel://h:26379"}, "kombu.transport.redis:SentinelTransport"),
    ],
)
def test_the_transport_each_broker_gets(settings, expected):
    """taskkit re-pointed kombu's redis/rediss aliases when Django started (AppConfig.ready)."""
    app = Celery("t", set_as_current=False)
    app.conf.update(settings)
    assert transport_of(app) == expected


def test_an_app_that_switches_broker_gets_the_new_schemes_transport():
    """Nothing is pinned in the app's configuration: redis:// → taskkit's, amqp:// → AMQP."""
    app = Celery("t", set_as_current=False)
    app.conf.broker_url = "redis://h/0"
    assert transport_of(app) == SAFE_CLASS
    app.conf.broker_url = "amqp://h//"
    assert transport_of(app) == "kombu.transport.pyamqp:Transport"


def test_an_environment_broker_url_counts(monkeypatch):
    """Celery reads CELERY_BROKER_URL from the environment, overriding the setting."""
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://env-host:6379/3")
    app = Celery("t", set_as_current=False)
    app.conf.broker_url = "amqp://h//"
    assert transport_of(app, write=True) == SAFE_CLASS


def test_rediss_keeps_kombus_tls_default():
    """kombu gives a rediss:// URL TLS from the alias name; taskkit's transport keeps it."""
    with Connection("rediss://h:6380/0") as connection:
        assert type(connection.transport).__module__ == "taskkit.worker.transport"
        assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    with Connection("rediss://h:6380/0", ssl={"ssl_ca_certs": "/ca.pem"}) as connection:
        assert connection.ssl == {"ssl_ca_certs": "/ca.pem"}


def test_use_safe_transport_is_idempotent_and_respects_other_choices(monkeypatch):
    from kombu import transport

    assert broker.use_safe_transport() is False  # done at Django start
    assert transport.TRANSPORT_ALIASES["redis"] == SAFE
    monkeypatch.setitem(transport.TRANSPORT_ALIASES, "redis", STOCK)
    monkeypatch.setitem(transport.TRANSPORT_ALIASES, "rediss", "someone.else:Transport")
    monkeypatch.setitem(transport._transport_cache, "redis", object)
    assert broker.use_safe_transport() is True
    assert transport.TRANSPORT_ALIASES["redis"] == SAFE
    assert transport.TRANSPORT_ALIASES["rediss"] == "someone.else:Transport"  # not kombu's: kept
    assert "redis" not in transport._transport_cache  # the stale class is forgotten
