"""Pure pieces of ``taskkit.producer.templates``: which routes allow a template, and the copies."""

import json

import pytest
from celery.app.routes import prepare

from taskkit.core.headers import MessageHeaders
from taskkit.producer.templates import Cloner, _static_routes

pytestmark = pytest.mark.timeout(10)


def router(name, args, kwargs, options, task=None, **kw):
    return None


@pytest.mark.parametrize(
    ("routes", "static"),
    [
        (None, True),
        ((), True),
        ({"tasks.*": {"queue": "q"}}, True),
        ([{"a": "q"}, {"b": {"queue": "r"}}], True),
        (([("tasks.*", {"queue": "q"})],), True),  # a list of (pattern, route) pairs
        ((router,), False),
        ([{"a": "q"}, router], False),
        ("tests.unit.test_templates.router", False),  # a string names a router function
        (["tests.unit.test_templates.router"], False),
    ],
)
def test_only_mapping_routes_route_every_call_alike(routes, static):
    """Read from what Celery's router holds: ``task_routes`` as ``celery.app.routes.prepare``
    expands it."""
    assert _static_routes(prepare(routes)) is static


MESSAGE = {
    "body": "W1tdLCB7fSwge31d",
    "content-encoding": "utf-8",
    "content-type": "application/json",
    "headers": {
        "id": "first",
        "root_id": "first",
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "retries": 0,
        "task": "t",
        "taskkit_run": "1",
    },
    "properties": {
        "correlation_id": "first",
        "delivery_tag": "tag",
        "priority": 0,
        "body_encoding": "base64",
    },
}


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (None, ("run-2", None, "()", "{}", 0)),
        (
            MessageHeaders("('a \"b\" \\\\',)", "{'é': 1}", "root", "parent", 4),
            ("root", "parent", "('a \"b\" \\\\',)", "{'é': 1}", 4),
        ),
    ],
)
def test_a_copy_carries_the_runs_own_fields(shown, expected):
    copy = json.loads(Cloner(MESSAGE)("run-2", shown))
    headers = copy["headers"]
    assert headers["id"] == copy["properties"]["correlation_id"] == "run-2"
    got = (headers["root_id"], headers["parent_id"], headers["argsrepr"], headers["kwargsrepr"])
    assert (*got, headers["retries"]) == expected
    assert copy["properties"]["delivery_tag"] != "tag"  # fresh, as kombu makes one per message
    per_run = {"id", "root_id", "parent_id", "argsrepr", "kwargsrepr", "retries"}
    per_run |= {"correlation_id", "delivery_tag"}
    for part in ("headers", "properties"):
        assert {k: v for k, v in copy[part].items() if k not in per_run} == {
            k: v for k, v in MESSAGE[part].items() if k not in per_run
        }
    assert copy["body"] == MESSAGE["body"]


def test_a_message_without_its_id_in_the_headers_is_not_copied():
    """Task protocol 1 keeps the id in the body: every copy would carry the first run's id."""
    protocol_1 = {**MESSAGE, "headers": {"task": "t"}}
    with pytest.raises(ValueError, match="protocol 2"):
        Cloner(protocol_1)
