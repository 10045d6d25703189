"""Prometheus exposition of the ledger's figures (``pip install 'django-taskkit[metrics]'``).

``LedgerCollector`` reads ``taskkit.observe.stats`` at scrape time and turns it into metric
families. It keeps no counters of its own, so any web process can serve the scrape and the numbers
agree however many workers and web processes run. ``render()`` produces the text exposition served
by ``taskkit.views.metrics``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import stats


class LedgerCollector(Collector):
    """Metrics derived from the run ledger, computed when scraped."""

    def collect(self) -> Iterator[Metric]:
        figures = stats.read()

        runs = GaugeMetricFamily(
            "taskkit_runs", "Runs in the ledger, by task and state.", labels=["task", "state"]
        )
        for (task, state), n in sorted(figures.runs.items()):
            runs.add_metric([task, state], n)
        yield runs

        attempts = CounterMetricFamily(
            "taskkit_attempts", "Attempts made by the runs in the ledger.", labels=["task"]
        )
        for task, n in sorted(figures.attempts.items()):
            attempts.add_metric([task], n)
        yield attempts

        failures = CounterMetricFamily(
            "taskkit_attempt_failures",
            "Attempts that did not succeed, by task and outcome.",
            labels=["task", "outcome"],
        )
        for (task, outcome), n in sorted(figures.attempt_failures.items()):
            failures.add_metric([task, outcome], n)
        yield failures

        oldest = GaugeMetricFamily(
            "taskkit_oldest_waiting_run_age_seconds",
            "Age of the oldest run not yet started, by state (0 when there is none).",
            labels=["state"],
        )
        for state in stats.WAITING_STATES:
            oldest.add_metric([str(state)], figures.oldest_waiting.get(state, 0.0))
        yield oldest

        delay = GaugeMetricFamily(
            "taskkit_commit_to_start_seconds",
            "Seconds from dispatch to a run's first attempt, quantiles over recent runs.",
            labels=["quantile"],
        )
        for q, seconds in sorted(figures.commit_to_start.items()):
            delay.add_metric([str(q)], seconds)
        yield delay
        yield GaugeMetricFamily(
            "taskkit_commit_to_start_sample_runs",
            "How many recent runs taskkit_commit_to_start_seconds is computed from.",
            value=figures.commit_to_start_runs,
        )

        relay = GaugeMetricFamily(
            "taskkit_relay_heartbeat_age_seconds",
            "Seconds since each relay's last sweep.",
            labels=["relay"],
        )
        for name, age in sorted(figures.relay_heartbeats.items()):
            relay.add_metric([name], age)
        yield relay

        failed = GaugeMetricFamily(
            "taskkit_failed_runs",
            "FAILED runs by task and last error type (error_type "
            '"taskkit.exceptions.TaskNotRegistered": the task was renamed or removed).',
            labels=["task", "error_type"],
        )
        for (task, error_type), n in sorted(figures.failed_by_error.items()):
            failed.add_metric([task, error_type], n)
        yield failed

        unregistered = GaugeMetricFamily(
            "taskkit_unregistered_task_runs",
            "Runs whose task a relay found not registered, waiting out "
            "TASKKIT_UNKNOWN_TASK_GRACE_SECONDS before they end FAILED.",
            labels=["task"],
        )
        for task, n in sorted(figures.unregistered_waiting.items()):
            unregistered.add_metric([task], n)
        yield unregistered


def render() -> bytes:
    """The text exposition of a fresh registry holding only the ledger collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector())
    return generate_latest(registry)
