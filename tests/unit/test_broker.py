"""taskkit.broker: Redis brokers get taskkit's transport unless the project chose one."""

import ssl

import pytest
from celery import Celery

from taskkit import broker

SAFE = "taskkit.transport:Transport"
UNVERIFIED = {"ssl_cert_reqs": ssl.CERT_NONE}

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("settings", "changed", "transport", "use_ssl"),
    [
        ({"broker_url": "redis://h:6379/0"}, True, SAFE, False),
        ({"broker_url": "redis://a:6379/0;redis://b:6379/0"}, True, SAFE, False),  # failover
        ({"broker_url": ["redis://a/0", "redis://b/0"]}, True, SAFE, False),
        # rediss:// keeps the TLS kombu would have given it (with an import path it gives none)
        ({"broker_url": "rediss://h:6380/0"}, True, SAFE, UNVERIFIED),
        (
            {"broker_url": "rediss://h:6380/0", "broker_use_ssl": {"ssl_ca_certs": "/ca.pem"}},
            True,
            SAFE,
            {"ssl_ca_certs": "/ca.pem"},
        ),
        # the project's choice is kept, even kombu's own transport (check W010 warns then)
        ({"broker_url": "redis://h/0", "broker_transport": "redis"}, False, "redis", False),
        ({"broker_url": "rediss://h/0", "broker_transport": SAFE}, False, SAFE, UNVERIFIED),
        # not (only) Redis: untouched
        ({"broker_url": "amqp://h//"}, False, None, False),
        ({"broker_url": "sentinel://h:26379"}, False, None, False),
        ({"broker_url": "redis://a/0", "broker_read_url": "amqp://b//"}, False, None, False),
        ({"broker_url": "memory://"}, False, None, False),
    ],
)
def test_use_safe_transport(settings, changed, transport, use_ssl):
    app = Celery("t", set_as_current=False)
    app.conf.update(settings)
    assert broker.use_safe_transport(app) is changed
    assert app.conf.broker_transport == transport
    assert app.conf.broker_use_ssl == use_ssl
    assert broker.use_safe_transport(app) is False  # idempotent


def test_an_environment_broker_url_counts(monkeypatch):
    """Celery reads CELERY_BROKER_URL from the environment; so does taskkit."""
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://env-host:6379/3")
    app = Celery("t", set_as_current=False)
    assert broker.use_safe_transport(app) is True
    with app.connection_for_write() as connection:
        assert connection.hostname == "env-host"
        assert type(connection.transport).__module__ == "taskkit.transport"


def test_a_rediss_connection_through_taskkits_transport_uses_tls():
    """The TLS settings reach the redis-py connection pool kombu builds (no server needed)."""
    app = Celery("t", set_as_current=False)
    app.conf.broker_url = "rediss://h:6380/0"
    broker.use_safe_transport(app)
    with app.connection_for_read() as connection:
        channel_cls = connection.transport.Channel
        assert connection.ssl == UNVERIFIED
        assert channel_cls.connection_class_ssl is not None


def test_a_worker_app_is_configured_at_worker_init():
    """An app that was not current when Django started is configured when its worker starts."""
    from celery.signals import worker_init

    app = Celery("t", set_as_current=False)
    app.conf.broker_url = "redis://h/0"
    worker_init.send(sender=type("FakeWorker", (), {"app": app})())
    assert app.conf.broker_transport == SAFE
