"""taskkit.worker.transport: an undecodable Redis queue entry is dropped and logged, not raised."""

import pytest
from kombu import Connection

from devsupport.embedded_redis import EmbeddedRedis


@pytest.fixture
def server():
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.mark.parametrize("raw", [b"this is not json", b"\xff\xfe\x00 not utf-8"])
def test_an_undecodable_entry_is_dropped_and_the_next_message_delivered(server, raw, caplog):
    import redis

    with Connection(server.url, transport="taskkit.worker.transport:Transport") as conn:
        queue = conn.SimpleQueue("q")
        queue.put({"n": 1})
        redis.Redis(port=server.port).rpush("q", raw)  # popped first (kombu pops from the right)
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()
    assert "dropped an entry from a Redis queue" in caplog.text


def test_the_stock_transport_raises_on_the_same_entry(server):
    """kombu's own transport, named by import path (taskkit re-points the redis:// alias)."""
    import json

    import redis

    with Connection(server.url, transport="kombu.transport.redis:Transport") as conn:
        queue = conn.SimpleQueue("q")
        redis.Redis(port=server.port).rpush("q", b"this is not json")
        with pytest.raises(json.JSONDecodeError):
            queue.get(timeout=5)
        queue.close()
